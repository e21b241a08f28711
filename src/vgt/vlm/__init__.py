"""The small VLM built and pretrained here for understanding on ShapesWorld: its architecture and tokenizer
(`model`), the captioning task and its metric (`understanding`), and its pretraining stage (`pretrain`)."""
