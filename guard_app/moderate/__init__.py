"""moderate"""
