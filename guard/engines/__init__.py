"""The engines that run Llama Guard and Prompt Guard, and `loading`, which picks and loads them."""
