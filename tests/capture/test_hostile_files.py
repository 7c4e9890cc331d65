"""Model files someone else made never run code: hostile ``.pt2`` archives (built here from real
``torch.export.save`` output), TorchScript behind ``--trust-file``, and broken files in one line."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from convdoctor.capture.archive import vet_exported
from convdoctor.capture.load import load_model
from convdoctor.cli import main
from convdoctor.errors import ModelLoadError, UsageError
from convdoctor.inspect import inspect
from tests.capture import hostile
from tests.fixtures.user_models import tiny

Builder = Callable[[Path, Path, Path], Path]

#: (builder, whether it needs the dynamic-shape archive, what the refusal names)
HOSTILE: dict[str, tuple[Builder, bool, str]] = {
    "pickled-weight": (hostile.pickled_weight, False, "stored as a pickle"),
    "pickled-sample-inputs": (hostile.pickled_sample_inputs, False, "sample inputs need a full unpickler"),
    "code-in-shape-expression": (hostile.code_in_shape_expression, True, "shape expression is code"),
    "python-call-in-graph": (hostile.python_call_in_graph, False, "not a torch operator"),
    "shared-object": (hostile.shared_object, False, "data/aotinductor/model/model.so"),
}


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A genuine archive of the tiny model, static and with a dynamic batch."""
    folder = tmp_path_factory.mktemp("pt2")
    return hostile.exported(folder / "plain.pt2"), hostile.exported(folder / "dyn.pt2", dynamic=True)


def _build(case: str, archives: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    builder, dynamic, _ = HOSTILE[case]
    marker = tmp_path / "PAYLOAD_RAN"
    return builder(archives[dynamic], tmp_path / "evil.pt2", marker), marker


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_archive_is_refused_before_torch_reads_it(
    case: str, archives: tuple[Path, Path], tmp_path: Path
) -> None:
    evil, marker = _build(case, archives, tmp_path)
    with pytest.raises(ModelLoadError, match=HOSTILE[case][2]) as info:
        load_model(str(evil))
    message = str(info.value)
    assert "\n" not in message and "--trust-file" in message and "trusted=True" in message
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize("case", ["pickled-weight", "code-in-shape-expression"])
def test_the_cli_refuses_a_hostile_model_in_one_line_exit_2(
    case: str, archives: tuple[Path, Path], tmp_path: Path
) -> None:
    evil, marker = _build(case, archives, tmp_path)
    result = CliRunner().invoke(main, ["inspect", str(evil)])
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "refusing to load" in result.stderr
    assert not marker.exists(), "the payload ran"


def test_load_int8_refuses_a_hostile_program(archives: tuple[Path, Path], tmp_path: Path) -> None:
    from convdoctor.quant import load_int8

    evil, marker = _build("pickled-weight", archives, tmp_path)
    with pytest.raises(UsageError, match="refusing to load") as info:
        load_int8(evil, torch.rand(2, 3, 8, 8))
    assert "\n" not in str(info.value) and "trusted=True" in str(info.value)
    assert not marker.exists(), "the payload ran"


def test_a_plain_archive_loads_and_what_torch_writes_passes_the_vetting(archives: tuple[Path, Path]) -> None:
    for path in archives:
        vet_exported(path.read_bytes(), path)  # nothing raised
    loaded = load_model(str(archives[1]))
    assert inspect(loaded, (2, 3, 8, 8)).totals["params"] == sum(p.numel() for p in tiny().parameters())


def test_trust_opts_in_for_a_file_the_vetting_refuses(archives: tuple[Path, Path], tmp_path: Path) -> None:
    odd = hostile.unknown_entry(archives[0], tmp_path / "odd.pt2")
    with pytest.raises(ModelLoadError, match="notes/readme.txt"):
        load_model(str(odd))
    assert load_model(str(odd), trusted=True).default_input_size == (2, 3, 8, 8)
    result = CliRunner().invoke(main, ["inspect", str(odd), "--trust-file", "--json"])
    assert result.exit_code == 0, result.output


@pytest.mark.filterwarnings("ignore:`torch.jit")
def test_torchscript_loads_only_when_trusted(tmp_path: Path) -> None:
    ts = tmp_path / "m.pt"
    torch.jit.script(tiny().eval()).save(str(ts))
    with pytest.raises(ModelLoadError, match="runs the code inside it") as info:
        load_model(str(ts))
    assert "--trust-file" in str(info.value)
    assert isinstance(load_model(str(ts), trusted=True).module, torch.jit.ScriptModule)
    refused = CliRunner().invoke(main, ["inspect", str(ts), "--input", "1x3x8x8"])
    assert refused.exit_code == 2 and len(refused.stderr.strip().splitlines()) == 1
    trusted = CliRunner().invoke(main, ["inspect", str(ts), "--input", "1x3x8x8", "--trust-file", "--json"])
    assert trusted.exit_code == 0, trusted.output


def test_a_checkpoint_given_as_model_is_told_to_use_weights(tmp_path: Path) -> None:
    ckpt = tmp_path / "w.pt"
    torch.save(tiny().state_dict(), ckpt)
    with pytest.raises(ModelLoadError, match="--weights"):
        load_model(str(ckpt), trusted=True)  # never handed to torch.jit.load


def test_broken_archives_are_one_line_without_torch_noise(archives: tuple[Path, Path], tmp_path: Path) -> None:
    """What the terminal shows (a real process: torch's log handlers write to descriptor 2)."""
    (tmp_path / "empty.pt2").write_bytes(b"")
    (tmp_path / "garbage.pt2").write_bytes(b"not a zip at all")
    (tmp_path / "truncated.pt2").write_bytes(archives[0].read_bytes()[:-300])
    hostile.rewrite(archives[0], tmp_path / "corrupt.pt2", lambda name, _: b"{" if name.startswith("models/") else None)
    script = (
        "import sys\nfrom convdoctor.cli import main\n"
        "for a in sys.argv[1:]:\n"
        "    try:\n        main([*a.split('|')], standalone_mode=True)\n"
        "    except SystemExit as e:\n        print('EXIT', e.code, flush=True)\n"
        "        print('---', file=sys.stderr, flush=True)\n"
    )
    cases = [f"inspect|{tmp_path / n}.pt2" for n in ("empty", "garbage", "truncated", "corrupt")]
    # torch's own reader (it logs a traceback, then raises), quietened
    cases += [f"inspect|{tmp_path / n}.pt2|--trust-file" for n in ("empty", "truncated")]
    proc = subprocess.run(
        [sys.executable, "-c", script, *cases], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.stdout.split() == ["EXIT", "2"] * len(cases), proc.stdout + proc.stderr
    blocks = proc.stderr.split("---\n")[: len(cases)]
    for case, block in zip(cases, blocks, strict=True):
        lines = block.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("convdoctor: error: "), (case, block)
        assert "Traceback" not in block and "Warning" not in block
