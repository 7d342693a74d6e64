"""End to end: a latent judge behind the emulator, then `pairbatch scores` and `report`."""

from __future__ import annotations

import random
import re
from pathlib import Path

import polars as pl
import pytest

import pairbatch
from pairbatch.analysis import position_bias, reverse_consistency
from pairbatch.cli import main
from pairbatch.design import apply_order, balanced_pairs
from pairbatch.errors import InputError
from pairbatch.report import load_runs, write_report
from pairbatch.summary import NOTE_NOT_RANDOMISED, summarize
from pairbatch.testing import ProviderEmulator
from pairbatch.testing.judge import LatentJudge

IDS = ["a:b", "a", "b:c", "x_vs_y", 'q"t', "c,d", "ünï", "e\\f", "g", "h", "i", "j"]


async def run_study(out: Path) -> tuple[pl.DataFrame, int]:
    rng = random.Random(4)
    samples = pl.DataFrame({"ID": IDS, "text": [f"essay by {i}" for i in IDS]})
    judge = LatentJudge({t: rng.gauss(0, 0.7) for t in samples["text"]}, position_bias=0.8, seed=2)
    pairs = apply_order(balanced_pairs(samples, 6, seed=1), "both")
    async with ProviderEmulator(judge=judge, latency=0.05) as emu:
        await pairbatch.submit_pairs_multi_batch(
            pairs,
            model="gpt-4.1-mini",
            trait_name="Quality",
            trait_description="How good",
            backend="openai",
            n_segments=2,
            output_dir=out,
            write_registry=True,
            api_key="k",
            base_url=emu.base_url("openai"),
        )
        result = await pairbatch.resume_multi_batches(
            output_dir=out,
            interval_seconds=0.05,
            api_keys={"openai": "k"},
            base_urls={"openai": emu.base_url("openai")},
        )
    assert result.combined is not None
    return result.combined, pairs.height // 2


async def test_end_to_end_study_scores_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    combined, n_pairs = await run_study(run)
    assert combined.height == 2 * n_pairs > 60
    assert set(combined["order_role"]) == {"main", "reverse"}
    cons = reverse_consistency(combined)
    assert cons.summary["n_pairs"].item() == n_pairs
    bias = position_bias(combined, n_boot=100).summary
    assert bias["p_sample1_overall"].item() > 0.5

    loaded = load_runs([run])
    with pytest.raises(InputError, match=r"run folder .* is given twice \(also as "):
        load_runs([run, tmp_path / "." / "run" / ""])
    with pytest.raises(InputError, match="given twice"):
        load_runs([run, run])
    assert loaded.combined is not None and loaded.combined.height == combined.height
    assert loaded.jobs["results"].sum() == combined.height
    summary = summarize(loaded.combined, loaded.failed)
    assert summary["pos1_note"].to_list() == ["both orders judged"]
    assert summary["pos1_win_rate"].item() == pytest.approx((combined["winner_pos"] == 1).mean())

    table = tmp_path / "scores.csv"
    assert main(["scores", str(run), "--out", str(table), "--position-effect"]) == 0
    printed = capsys.readouterr().out
    assert "x_vs_y" in printed and "theta" in printed
    scores = pl.read_csv(table)
    assert sorted(scores["id"].to_list()) == sorted(IDS)
    assert {"lower", "upper", "position_effect", "rank"} <= set(scores.columns)

    html_path = tmp_path / "report.html"
    assert main(["report", str(run), "--out", str(html_path)]) == 0
    page = html_path.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 2
    assert (
        "Consistency across orders" in page
        and "mcnemar_p" in page
        and "http://" not in page
        and "https://" not in page
    )
    assert "x_vs_y" in page and "q&quot;t" in page
    # A folder as the target is refused before the report is built, naming it.
    with pytest.raises(InputError, match="report: .* is a folder"):
        write_report([run], tmp_path)
    nested = tmp_path / "new" / "deeper" / "report.html"
    assert write_report([run], nested) == nested and nested.read_text(encoding="utf-8")


def test_summary_withholds_the_rate_when_order_was_not_randomised() -> None:
    combined = pl.DataFrame(
        {
            "backend": ["openai"] * 3,
            "model": ["m"] * 3,
            "ID1": ["a", "a", "b"],
            "ID2": ["b", "c", "c"],
            "winner_pos": [1, 1, 2],
        }
    )
    summary = summarize(combined)
    assert summary["pos1_win_rate"].item() is None
    assert summary["pos1_note"].item() == NOTE_NOT_RANDOMISED
    marked = summarize(combined.with_columns(pl.lit("random").alias("order_design")))
    assert marked["pos1_win_rate"].item() == pytest.approx(2 / 3)
    assert marked["pos1_note"].item() == "order randomised"


def test_cli_bad_input_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["scores", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(r"pairbatch: error: .*not a run folder.*", err)
    (tmp_path / "jobs_registry.csv").write_text("x\n", encoding="utf-8")
    assert main(["scores", str(tmp_path), "--out", str(tmp_path / "t.xlsx")]) == 2
    assert "--out must end in" in capsys.readouterr().err


def test_latent_emulator_qualities_file(tmp_path: Path) -> None:
    from pairbatch.cli_study import read_qualities
    from pairbatch.errors import InputError

    path = tmp_path / "q.csv"
    pl.DataFrame({"text": ["a, b", "c"], "quality": [1.5, -2]}).write_csv(path)
    assert read_qualities(str(path)) == {"a, b": 1.5, "c": -2.0}
    pl.DataFrame({"text": ["a"]}).write_csv(path)
    with pytest.raises(InputError, match="'quality'"):
        read_qualities(str(path))
    assert main(["latent-emulator", str(tmp_path / "none.csv")]) == 2
    for body, message in [
        ("text,quality\na,1\nb,x\n", "row 2: quality 'x' is not a finite number"),
        ("text,quality\na,1\nb,nan\n", "row 2: quality 'nan' is not a finite number"),
        ("text,quality\na,\n", "row 1: quality is missing"),
        ("text,quality\na,1\nb,2\na,3\n", "row 3 repeats the text of row 1"),
    ]:
        path.write_text(body, encoding="utf-8")
        with pytest.raises(InputError, match=message):
            read_qualities(str(path))
    # Texts are kept as written, not read as numbers.
    path.write_text("text,quality\n01,1\n1,2\n", encoding="utf-8")
    assert read_qualities(str(path)) == {"01": 1.0, "1": 2.0}
