"""labeled"""
