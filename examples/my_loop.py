"""Your loop as a step factory: `gpudiag report --cycle examples.my_loop:make_step` (see docs/cycle.md)."""
import torch


def make_step(device="cpu"):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10)).to(device)
    batch = torch.randn(64, 256, device=device)
    cycle_metrics = []

    def step():  # one cycle: forward pass, three metrics to the host
        with torch.no_grad():
            out = model(batch)
        cycle_metrics.append((out.mean().item(), out.std().item(), out.abs().max().item()))

    return step
