"""Face alignment (dlib, FFHQ-style with a looser crop), inpainting and dataset preparation."""
