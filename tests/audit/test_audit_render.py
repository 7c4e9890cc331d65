"""Rendered audit output: a golden file from a fixed report, and a real report's JSON."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import torch

from convdoctor.audit import audit
from convdoctor.findings import make_finding
from convdoctor.report import Format, render
from convdoctor.results.audit import AuditReport, CheckRecord, CheckStatus
from tests.audit import zoo


def _fixed_report() -> AuditReport:
    bn = make_finding(
        "BN_TRAIN_MODE",
        "2 of 2 BatchNorm layers are in training mode.",
        where="1",
        evidence={"count": 2},
        fix="Call model.eval().",
    )
    records = (
        CheckRecord(
            "modes",
            CheckStatus.FAIL,
            {
                "training_modules": 9,
                "batchnorm_training": 2,
                "batchnorm_total": 2,
                "dropout_training": 0,
                "eval_effect": {"samples": 4, "max_abs_diff": 1.5, "max_rel_diff": 0.75},
            },
            (bn,),
            0.12,
        ),
        CheckRecord(
            "batch",
            CheckStatus.FAIL,
            {
                "probes": 4,
                "rtol": 1e-4,
                "runs": [
                    {"run": "batch 8", "batch_size": 8, "max_abs_diff": 0.5, "max_rel_diff": 0.25},
                    {"run": "batch 64", "batch_size": 64, "error": "ValueError: boom"},
                ],
                "incident": {
                    "samples": 100,
                    "eval_accuracy": 0.97,
                    "worst_drop": 0.6,
                    "rows": [
                        {"batch_size": 1, "accuracy": None, "eval_accuracy": 0.97, "error": "ValueError: one sample"},
                        {"batch_size": 8, "accuracy": 0.37, "eval_accuracy": 0.97},
                        {"batch_size": 64, "accuracy": 0.965, "eval_accuracy": 0.97},
                    ],
                },
            },
            (),
            1.5,
        ),
        CheckRecord("export", CheckStatus.SKIPPED, {"reason": "nondeterministic model"}, (), 0.0),
        CheckRecord("fusion", CheckStatus.ERROR, {"error": "RuntimeError: broken"}, (), 0.01),
    )
    inputs = {
        "shape": [100, 1, 8, 8],
        "samples": 100,
        "synthetic": False,
        "targets": True,
        "device": "cpu",
        "batch_sizes": [1, 8, 64],
    }
    return AuditReport(model="digits-cnn", findings=(bn,), checks=records, input=inputs)


def test_terminal_golden(golden: Callable[[str, str], None]) -> None:
    text = render(_fixed_report(), Format.TERMINAL, width=110)
    golden("audit_incident.txt", text)
    for needle in (
        "Accuracy by batch size (100 labelled samples)",
        "37.0%",
        "-60.0 pt",
        "fails",
        "check crashed: RuntimeError: broken",
        "nondeterministic model",
    ):
        assert needle in text


def test_real_report_json_is_the_to_dict_and_has_the_design_keys() -> None:
    model = zoo.trained_like(zoo.bn_net()).train()
    report = audit(model, zoo.images(16), targets=torch.arange(16) % 4, checks="modes,batch,bn_stats")
    doc = json.loads(render(report, Format.JSON))
    assert doc == json.loads(json.dumps(report.to_dict()))
    assert doc["kind"] == "audit" and set(doc) >= {"convdoctor", "model", "findings", "checks", "input", "incident"}
    assert [(c["name"], c["status"]) for c in doc["checks"]] == [
        ("modes", "fail"),
        ("batch", "fail"),
        ("bn_stats", "pass"),
    ]
    text = render(dataclasses.replace(report, model="bn-net"), Format.TERMINAL, width=120)
    assert "BN_TRAIN_MODE" in text and "Accuracy by batch size" in text
