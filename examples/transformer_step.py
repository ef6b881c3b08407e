"""A real model step for `--cycle`: one TransformerEncoderLayer forward + backward + SGD step.

    gpudiag report --cycle examples.transformer_step:make_step

d_model 128, 4 heads, feed-forward 256, batch-first 16 x 32 x 128 inputs (issue 22's workload;
benchmarks/cycle_repeatability.py runs it five times to check that the verdict repeats).
"""
import torch


def make_step(device="cpu"):
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(d_model=128, nhead=4, dim_feedforward=256, batch_first=True).to(device)
    opt = torch.optim.SGD(layer.parameters(), lr=0.01)
    x = torch.randn(16, 32, 128, device=device)

    def step():  # one cycle: forward, backward, one optimizer step
        opt.zero_grad(set_to_none=True)
        layer(x).pow(2).mean().backward()
        opt.step()

    return step
