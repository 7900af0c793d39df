"""The field registry (bnbench.experiment.fields) is the one place that lists run fields: every table derived from
it agrees with it."""

import numpy as np
import pandas as pd
import pytest

from bnbench.experiment import fields
from bnbench.results import frames
from bnbench.reporting import figures
from bnbench.results import schema
from bnbench.experiment import spec
from bnbench.stats import summary
from bnbench.experiment.fields import FIELDS
from bnbench.training.signature import COMPOSITE_FIELDS, HParams, Signature


@pytest.mark.unit
def test_the_spec_parser_checks_exactly_the_run_fields():
    assert tuple(spec.RULES) == fields.RUN_FIELDS
    assert set(spec.TOP_LEVEL_KEYS) == {"name", "seeds", "grid", "base_dir", "compare", "margin", "data_layout", "numerics",
                                        *fields.RUN_FIELDS}
    assert set(fields.LIST_FIELDS) == {"widths", "eval_stats", "probes", "lr_milestones"}


@pytest.mark.unit
def test_runs_csv_has_the_fields_in_registry_order_between_the_ids_and_the_seed():
    columns = list(schema.RUN_COLUMNS)
    in_order = [c for c in columns[columns.index("dataset") : columns.index("seed")] if c in FIELDS]
    assert in_order == list(fields.RUN_FIELDS)
    assert all(schema.RUN_COLUMNS[name] == FIELDS[name].doc for name in fields.RUN_FIELDS)


@pytest.mark.unit
def test_column_dtypes_follow_each_fields_kind():
    for name, field in FIELDS.items():
        kind = field.rule.kind
        assert (name in frames.CATEGORICAL) == (kind in ("str", "list", "choices")), name
        assert (name in frames.BOOLEAN) == (kind == "bool"), name


@pytest.mark.unit
def test_every_numeric_field_is_a_plot_axis_and_every_text_field_is_not():
    for name, field in FIELDS.items():
        numeric = field.rule.kind in ("int", "float") and name not in ("seed",)
        assert (name in figures.NUMERIC_AXES) == numeric, name
    assert set(figures.LOG_AXES) | set(figures.ONE_MINUS_AXES) <= set(figures.NUMERIC_AXES)


@pytest.mark.unit
def test_the_program_signature_and_traced_arguments_come_from_the_registry():
    compiled = {n for n, f in FIELDS.items() if f.compiled in ("value", "switch")}
    assert set(Signature._fields) == compiled | set(COMPOSITE_FIELDS)
    assert set(HParams._fields) == {n for n, f in FIELDS.items() if f.traced} | {"optimizer_floats"}
    for name, field in FIELDS.items():
        assert field.compiled in fields.COMPILED_AS and field.scale in fields.SCALES, name
        assert field.compiled or field.traced or name in ("epochs", "lr_scaling_batch_size"), name


@pytest.mark.unit
def test_a_signature_is_built_by_name_not_by_position():
    from bnbench import data

    dataset = data.load("synthetic", 1200)
    cfg = fields.RunConfig(dataset="synthetic", num_samples=1200, widths=(8, 4), batch_size=16, eval_every=7,
                           noisy_bn=0.3, dropout=0.0, warmup_steps=5, schedule="cosine")
    sig = Signature.of(cfg, dataset)
    for name in (n for n, f in FIELDS.items() if f.compiled == "value"):
        assert getattr(sig, name) == getattr(cfg, name), name
    assert sig.noisy_bn is True and sig.dropout is False and sig.schedule.warmup and sig.schedule.kind == "cosine"
    hp = HParams.of(cfg)
    assert all(float(getattr(hp, n)) == pytest.approx(getattr(cfg, n)) for n in fields.TRACED_FIELDS if n != "lr")
    assert hp.optimizer_floats.shape == (0,)


@pytest.mark.unit
def test_the_summary_derives_the_fields_a_spec_may_leave_unset():
    assert set(fields.DERIVED_FIELDS) == {"num_samples", "widths", "depth", "steps", "eval_every"}
    runs = pd.DataFrame({"epochs": [1, 1, 1, 1], "batch_size": [16, 16, 32, 32], "steps": [75, 75, 37, 37],
                         "eval_every": [7, 7, 3, 3], "seed": [0, 1, 0, 1]})
    assert summary.swept_axes(runs) == ["batch_size"]


@pytest.mark.integration
@pytest.mark.parametrize("axis", figures.NUMERIC_AXES)
def test_every_numeric_swept_field_gets_its_metric_against_axis_figure(axis, tiny_sweep, tmp_path):
    runs = frames.load_runs(tiny_sweep)
    values = np.where(np.arange(len(runs)) % 2 == 0, 1, 2) * (0.3 if FIELDS[axis].rule.kind == "float" else 4)
    if FIELDS[axis].scale == "one_minus":
        values = np.where(np.arange(len(runs)) % 2 == 0, 0.9, 0.99)
    runs = runs.assign(**{axis: values, "placement": "pre", "epsilon": 1e-5 if axis != "epsilon" else values})
    paths = figures.write_plots(tmp_path, runs, pd.DataFrame(), pd.DataFrame(), "test_acc", plot_format="svg")
    assert tmp_path / f"test_acc_vs_{axis}.svg" in paths  # SVG: no 300-dpi rasterizing, the same figure
