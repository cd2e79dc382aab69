"""``ats-bench convs``: how close the feature network runs to the machine's
convolution kernels.

The training step of a task like Megapixel MNIST is the feature network on
B·N patches, forward and backward. This benchmark counts the network's
convolution FLOPs (2 · output elements · input channels per group · kernel
size, per layer) and times, in each memory layout (``contiguous`` NCHW and
``channels_last`` NHWC), on the same synthetic patches:

* each convolution layer alone, forward, on its real input shape: the rate
  the machine's kernels reach on that shape (the attainable limit);
* the whole network forward (``torch.no_grad``) and forward + backward
  (backward counted as two forward passes' FLOPs, the usual convention).

``network / kernels`` is the network's forward rate over the rate of its
convolutions run alone: what is left between them is the layers between
the convolutions (ReLU, pooling, normalisation) and memory traffic.
Repeats alternate the layouts, so both see the same machine state; times
are medians. See docs/training.md, "A faster step on the CPU".
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from typing import Any, Callable

import click

__all__ = ["LAYOUTS", "conv_layers", "measure_convs", "convs_command"]

LAYOUTS = ("contiguous", "channels_last")


def conv_layers(network: Any, patch_shape: tuple[int, ...]) -> list[dict[str, Any]]:
    """The network's ``Conv2d`` layers in call order, each with its input shape
    for one patch of ``patch_shape`` (C, h, w) and its FLOPs for that patch."""
    import torch

    layers: list[dict[str, Any]] = []

    def record(module: Any, inputs: tuple, output: Any) -> None:
        k = module.kernel_size[0] * module.kernel_size[1]
        flops = 2 * output[0].numel() * (module.in_channels // module.groups) * k
        layers.append({"module": module, "input_shape": tuple(inputs[0].shape[1:]),
                       "output_shape": tuple(output.shape[1:]), "flops": int(flops)})

    hooks = [m.register_forward_hook(record) for m in network.modules()
             if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.no_grad():
            network(torch.zeros((1, *patch_shape)))
    finally:
        for h in hooks:
            h.remove()
    return layers


def measure_convs(network: Any, patch_shape: tuple[int, ...], *, patches: int,
                  repeats: int = 5, clock: Callable[[], float] = time.perf_counter
                  ) -> dict[str, Any]:
    """Rates (GFLOP/s) of ``network`` on ``patches`` random patches in both
    layouts: its layers alone, its forward and forward + backward passes."""
    import torch

    layers = conv_layers(network, patch_shape)
    if not layers:
        raise ValueError("the feature network has no Conv2d layer to measure")
    fwd_flops = patches * sum(layer["flops"] for layer in layers)
    x = torch.rand((patches, *patch_shape), generator=torch.Generator().manual_seed(0))
    layouts = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
    work: dict[tuple[str, str], Callable[[], None]] = {}
    for name, fmt in layouts.items():
        # one copy per layout: the same weights, converted once, outside the timing
        net = copy.deepcopy(network).to(memory_format=fmt)
        convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
        inp = x.contiguous(memory_format=fmt)

        def forward(net=net, inp=inp) -> None:
            with torch.no_grad():
                net(inp)

        def train(net=net, inp=inp) -> None:
            net.zero_grad(set_to_none=True)
            net(inp).sum().backward()

        work[(name, "forward")], work[(name, "forward+backward")] = forward, train
        for i, (layer, conv) in enumerate(zip(layers, convs)):
            layer_in = torch.rand((patches, *layer["input_shape"])).contiguous(memory_format=fmt)

            def alone(m=conv, layer_in=layer_in) -> None:
                with torch.no_grad():
                    m(layer_in)

            work[(name, f"layer{i}")] = alone
    for fn in work.values():  # warm-up: oneDNN builds its kernels on the first call
        fn()
    seconds: dict[tuple[str, str], list[float]] = {key: [] for key in work}
    for _ in range(repeats):  # the layouts alternate within every repeat
        for key, fn in work.items():
            start = clock()
            fn()
            seconds[key].append(clock() - start)
    med = {key: statistics.median(v) for key, v in seconds.items()}
    result: dict[str, Any] = {"patches": patches, "patch_shape": list(patch_shape),
                              "forward_gflop": fwd_flops / 1e9, "layers": [], "network": {}}
    for i, layer in enumerate(layers):
        row = {"input_shape": list(layer["input_shape"]),
               "output_shape": list(layer["output_shape"]),
               "mflop_per_patch": layer["flops"] / 1e6}
        for name in LAYOUTS:
            t = med[(name, f"layer{i}")]
            row[f"{name}_ms"] = t * 1e3
            row[f"{name}_gflops"] = patches * layer["flops"] / t / 1e9
        result["layers"].append(row)
    for name in LAYOUTS:
        kernels = sum(med[(name, f"layer{i}")] for i in range(len(layers)))
        result["network"][name] = {
            "forward_ms": med[(name, "forward")] * 1e3,
            "forward_gflops": fwd_flops / med[(name, "forward")] / 1e9,
            "train_ms": med[(name, "forward+backward")] * 1e3,
            "train_gflops": 3 * fwd_flops / med[(name, "forward+backward")] / 1e9,
            "kernels_gflops": fwd_flops / kernels / 1e9,
            "network_over_kernels": kernels / med[(name, "forward")],
        }
    result["channels_last_speedup"] = {
        "forward": med[("contiguous", "forward")] / med[("channels_last", "forward")],
        "forward+backward": (med[("contiguous", "forward+backward")]
                             / med[("channels_last", "forward+backward")]),
    }
    return result


@click.command(name="convs")
@click.option("--task", "task_name", required=True, help="Task whose feature network and patches.")
@click.option("--preset", default=None, help="A task preset (default: the paper's setting).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Images per step; the network sees batch-size x n_patches patches.")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True, help="Timed repeats (median).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any run setting.")
@click.option("--json", "json_path", default=None, help="Write the results as JSON to a file, or '-'.")
def convs_command(task_name, preset, batch_size, repeats, sets, json_path) -> None:
    """GFLOP/s of the feature network against its convolutions alone, in both layouts."""
    import torch

    from ats.bench.train import _machine
    from ats.core.geometry import as_patch_size
    from ats.task import configure

    try:
        task, config = configure(task_name, preset=preset, sets=sets)
        network = task.feature_network(config)
    except (KeyError, ValueError) as exc:  # an unknown task or preset, a bad --set
        raise click.ClickException(str(exc.args[0]) if exc.args else str(exc)) from None
    patch = as_patch_size(config.patch_size, 2)
    shape = (task.in_channels, *patch)
    patches = batch_size * config.n_patches
    click.echo(f"ats-bench convs --task {task_name}: feature network {config.feature!r} on "
               f"{patches} patches {shape} ({batch_size} x {config.n_patches}); "
               f"{torch.get_num_threads()} threads")
    click.echo(f"machine: {_machine()}")
    r = measure_convs(network, shape, patches=patches, repeats=repeats)
    click.echo(f"{'layer':>6} {'input':>14} {'MFLOP/patch':>11}  " +
               "  ".join(f"{n + ' GF/s':>18}" for n in LAYOUTS))
    for i, row in enumerate(r["layers"]):
        click.echo(f"{i:>6} {'x'.join(map(str, row['input_shape'])):>14} "
                   f"{row['mflop_per_patch']:>11.2f}  " +
                   "  ".join(f"{row[n + '_gflops']:>18.1f}" for n in LAYOUTS))
    for n in LAYOUTS:
        net = r["network"][n]
        click.echo(f"{n:>14}: network forward {net['forward_gflops']:.1f} GF/s "
                   f"({net['forward_ms']:.0f} ms), its convolutions alone "
                   f"{net['kernels_gflops']:.1f} GF/s (network/kernels "
                   f"{net['network_over_kernels']:.2f}); forward+backward "
                   f"{net['train_gflops']:.1f} GF/s ({net['train_ms']:.0f} ms)")
    s = r["channels_last_speedup"]
    click.echo(f"channels_last over contiguous: forward {s['forward']:.2f}x, "
               f"forward+backward {s['forward+backward']:.2f}x")
    if json_path:
        payload = json.dumps({"machine": _machine(), "task": task_name, **r}, indent=2)
        if json_path == "-":
            click.echo(payload)
        else:
            with open(json_path, "w") as f:
                f.write(payload + "\n")
