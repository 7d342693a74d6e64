from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pairbatch.errors import InputError
from pairbatch.prompts import (
    DEFAULT_TEMPLATE,
    build_prompt,
    extract_samples,
    trait_description,
    validate_template,
)


def test_default_template_is_valid_and_keeps_the_answer_contract() -> None:
    assert validate_template(DEFAULT_TEMPLATE) == DEFAULT_TEMPLATE
    assert "<BETTER_SAMPLE>SAMPLE_1</BETTER_SAMPLE>" in DEFAULT_TEMPLATE
    assert "<BETTER_SAMPLE>SAMPLE_2</BETTER_SAMPLE>" in DEFAULT_TEMPLATE


@pytest.mark.parametrize(
    "missing", ["{TRAIT_NAME}", "{TRAIT_DESCRIPTION}", "{SAMPLE_1}", "{SAMPLE_2}"]
)
def test_missing_placeholder_is_named(missing: str) -> None:
    with pytest.raises(InputError, match=missing.replace("{", r"\{").replace("}", r"\}")):
        validate_template(DEFAULT_TEMPLATE.replace(missing, "x"))


def test_empty_template_rejected() -> None:
    with pytest.raises(InputError):
        validate_template("  ")


def test_placeholders_inside_texts_are_not_substituted() -> None:
    prompt = build_prompt(DEFAULT_TEMPLATE, "Name", "desc {SAMPLE_1}", "one {SAMPLE_2}", "two")
    assert "desc {SAMPLE_1}" in prompt
    assert "one {SAMPLE_2}" in prompt


def test_builtin_traits() -> None:
    name, description = trait_description("overall_quality")
    assert name == "Overall Quality" and "\n" not in description
    with pytest.raises(InputError, match="unknown trait"):
        trait_description("nope")


@given(st.text(), st.text())
def test_extract_samples_round_trips(text1: str, text2: str) -> None:
    prompt = build_prompt(DEFAULT_TEMPLATE, "T", "D", text1, text2)
    extracted = extract_samples(prompt)
    if "<<<END_SAMPLE_1>>>" in text1 + text2 or "<<<SAMPLE_2>>>" in text1 + text2:
        return  # marker text inside a sample is adversarial; the judge may misread it
    assert extracted == (text1, text2)


def test_extract_samples_other_layout() -> None:
    assert extract_samples("no markers here") is None
