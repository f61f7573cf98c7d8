"""Images in prompts: reading them safely, the Gemma 4 image processor, and their place in a chat."""
