"""Generic building blocks (attention, WaveNet, flows, HiFi-GAN pieces) shared by the model files."""
