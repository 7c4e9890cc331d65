"""INT8 on CPU, side by side in one run: convdoctor's int8 against torch.ao's FX x86 anchor.

For each model: the fp32 original, torch.ao's FX static INT8 (``prepare_fx``/``convert_fx``
with the ``"x86"`` qconfig mapping: the anchor, deprecated but the fastest path users know),
``convdoctor.quant.quantize_int8`` as served (an AOTInductor package with freezing) and, for
context, two other ways to run the same int8 program: its lowered graph without compilation,
and ``torch.compile`` of the reference with Inductor's freezing and C++ wrapper (the same
kernels, behind Dynamo's per-call guard check and wrappers). All are calibrated on the same
batches.

Per batch size, the first call of each model is timed alone (for the compiled models it holds
the compilation; convdoctor's cache starts empty, in a temporary folder), then a second
``CompiledInt8`` of the same program makes its first call, which loads the package from the
cache ("cached first call"). Then ``--rounds`` interleaved rounds time every model for
``--calls`` calls each (median per round). Reported: the median over rounds of each median,
speedup = fp32 / model, and **ratio = convdoctor speedup / FX speedup** (>= 1: as fast as
the anchor). Interleaving puts the noise of a shared machine on every model alike. The load
average is printed before and after.

Digits ResNet (``tests/quant/digits_resnet.py``, trained a few epochs on scikit-learn's digits
at 32x32) and ``digits_cnn64`` (the demo's 4x wider DigitsCNN, width 64 at 8x8, trained as the
demo trains it: the demo's "width 64, batch 64" row) also get test accuracy; torchvision models have random weights and random
calibration (speed and size only).

Run: ``.venv/bin/python benchmarks/quant_int8.py [--models digits,resnet18] [--batch-sizes 1,32]
[--threads 2] [--rounds 5] [--no-torch-compile]``.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from convdoctor.quant import CompiledInt8, quantize_int8, serialized_bytes  # noqa: E402
from convdoctor.quant.serve import CACHE_ENV  # noqa: E402

SHAPES = {
    "digits": (1, 32, 32),
    "digits_cnn64": (1, 8, 8),
    "resnet18": (3, 224, 224),
    "mobilenet_v2": (3, 224, 224),
    "efficientnet_b0": (3, 224, 224),
}


def fx_anchor(model: nn.Module, batches: list[torch.Tensor]) -> nn.Module:
    """torch.ao FX static int8 for x86, calibrated on ``batches``."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the FX flow's deprecation notice
        prepared = prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping("x86"), (batches[0],))
        with torch.no_grad():
            for b in batches:
                prepared(b)
        return convert_fx(prepared)


def torch_compiled(reference: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The reference int8 program under ``torch.compile`` (Inductor, freezing, C++ wrapper)."""
    import torch._inductor.config as inductor_config

    compiled = torch.compile(reference, dynamic=False, options={"guard_filter_fn": _skip_module_guards()})

    seen: set[tuple[int, ...]] = set()

    def run(x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape) in seen:  # compiled: the settings matter only while compiling
            return compiled(x)
        seen.add(tuple(x.shape))
        with inductor_config.patch(freezing=True, cpp_wrapper=True):
            return compiled(x)

    return run


def _skip_module_guards() -> Callable[..., object]:
    return torch.compiler.skip_guard_on_all_nn_modules_unsafe


def build(name: str) -> tuple[nn.Module, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """The fp32 model, calibration inputs, and a labelled test set when one exists."""
    torch.manual_seed(0)
    if name == "digits":
        from tests.quant.digits_resnet import digits32, trained_resnet

        split = digits32()
        return trained_resnet(split, epochs=6), split.x_train[:256], (split.x_test, split.y_test)
    if name == "digits_cnn64":
        from convdoctor.demo.digits import load_digits_split, train_digits
        from convdoctor.demo.story import INT8_WIDE_EPOCHS, INT8_WIDE_WIDTH

        split = load_digits_split()
        model = train_digits(split, epochs=INT8_WIDE_EPOCHS, width=INT8_WIDE_WIDTH).model
        return model, split.x_train[:256], (split.x_test, split.y_test)
    import torchvision

    model = getattr(torchvision.models, name)(weights=None).eval()
    return model, torch.rand(32, *SHAPES[name]), None


def _time(fn: Callable[[], object], calls: int) -> float:
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return 1e3 * statistics.median(samples)


def _accuracy(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> float:
    x, y = data
    with torch.no_grad():  # in chunks of 32: the compiled model then compiles no new shape
        pred = torch.cat(
            [
                model(c if len(c) == 32 else torch.cat([c, c.new_zeros(32 - len(c), *c.shape[1:])]))[: len(c)].argmax(1)
                for c in x.split(32)
            ]
        )
    return 100 * float((pred == y).float().mean())


def measure(name: str, models: dict[str, Callable[..., object]], batch: int, rounds: int, calls: int) -> list[str]:
    """One markdown row per batch size: first calls, median ms, speedups, the ratio."""
    x = torch.rand(batch, *SHAPES[name])
    first, per_round = {}, {k: [] for k in models}
    with torch.no_grad():
        for key, model in models.items():
            start = time.perf_counter()
            model(x)
            first[key] = time.perf_counter() - start
            model(x)  # warm-up
        served = models["convdoctor"]
        assert isinstance(served, CompiledInt8) and served.note == "", getattr(served, "note", "")
        twin = CompiledInt8(served.reference, served.lowered)
        start = time.perf_counter()
        twin(x)
        cached = time.perf_counter() - start
        assert twin.records[-1].cached
        for _ in range(rounds):
            for key, model in models.items():
                per_round[key].append(_time(lambda m=model: m(x), calls))
    ms = {k: statistics.median(v) for k, v in per_round.items()}
    speed = {k: ms["fp32"] / v for k, v in ms.items()}
    spread = {k: (min(v), max(v)) for k, v in per_round.items()}
    cells = " | ".join(
        f"{ms[k]:.2f} ({speed[k]:.2f}x)" if k in ms else "-" for k in ("fp32", "fx", "convdoctor", "lowered", "compile")
    )
    return [
        f"| {name} | {batch} | {cells} | **{speed['convdoctor'] / speed['fx']:.2f}** | "
        f"{first['convdoctor']:.1f} s / {1e3 * cached:.0f} ms | "
        f"{spread['convdoctor'][0]:.2f}-{spread['convdoctor'][1]:.2f} / {spread['fx'][0]:.2f}-{spread['fx'][1]:.2f} |"
    ]


def run_model(name: str, batch_sizes: list[int], rounds: int, calls: int, with_compile: bool) -> tuple[list[str], str]:
    """Rows of the latency table and one line of sizes, times and accuracies."""
    model, calib, test = build(name)
    digits = name.startswith("digits")
    batches = list(calib.split(32 if digits else 8))
    start = time.perf_counter()
    fx = fx_anchor(model, batches)
    fx_s = time.perf_counter() - start
    start = time.perf_counter()
    q = quantize_int8(model, calib, batch_size=32 if digits else 8)
    q_s = time.perf_counter() - start
    models: dict[str, Callable[..., object]] = {
        "fp32": model,
        "fx": fx,
        "convdoctor": q.model,
        "lowered": q.lowered_graph,
    }
    if with_compile:
        models["compile"] = torch_compiled(q.reference)
    rows = [r for b in batch_sizes for r in measure(name, models, b, rounds, max(3, calls // b))]
    fp32_bytes = serialized_bytes(model)
    info = (
        f"{name}: state_dict bytes fp32 {fp32_bytes:,}, FX {serialized_bytes(fx) / fp32_bytes:.3f}x, "
        f"convdoctor {serialized_bytes(q.model) / fp32_bytes:.3f}x; quantize: FX {fx_s:.1f} s, "
        f"convdoctor {q_s:.1f} s (lowering included); int8 path: "
        f"{q.path_note}"
    )
    if test is not None:
        acc = {k: _accuracy(m, test) for k, m in models.items() if k != "compile"}
        info += "; test accuracy " + ", ".join(f"{k} {v:.2f}%" for k, v in acc.items())
    return rows, info


def main() -> None:
    """Parse arguments, measure, print markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,resnet18,mobilenet_v2,efficientnet_b0")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=64, help="calls per round at batch 1 (divided by the batch)")
    parser.add_argument("--no-torch-compile", action="store_true", help="skip the torch.compile column")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ[CACHE_ENV] = tempfile.mkdtemp(prefix="quant-int8-bench-")  # a cold package cache
    isa = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if k in os.environ}
    print(
        f"threads {args.threads}, torch {torch.__version__}, CPU caps {isa or 'none (native)'}, "
        f"load average before {os.getloadavg()[0]:.2f}, "
        f"package cache {os.environ[CACHE_ENV]} (empty at start)\n"
    )
    print(
        "| model | batch | fp32 ms | FX int8 ms (speedup) | convdoctor int8 ms (speedup) | lowered, "
        "not compiled | torch.compile, same kernels | convdoctor / FX | convdoctor first call: "
        "compile / cached | round spread ms, convdoctor / FX |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    infos = []
    for name in args.models.split(","):
        rows, info = run_model(
            name, [int(b) for b in args.batch_sizes.split(",")], args.rounds, args.calls, not args.no_torch_compile
        )
        print("\n".join(rows), flush=True)
        infos.append(info)
    print("\n" + "\n".join(infos))
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
