"""The network: one fused nn.LSTM / nn.GRU / nn.RNN between an embedding and a decoder, its config, and the named presets; scoring text with it, statically and dynamically."""
