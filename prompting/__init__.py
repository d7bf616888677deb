"""Prompt rendering and encoding shared by training, inference and the simulator: templates,
the segment encoder and the corpus-trained tokenizer."""
