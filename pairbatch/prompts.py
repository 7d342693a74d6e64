"""Prompt templates: the default one, validation, and safe placeholder filling."""

from __future__ import annotations

import re

from pairbatch.errors import InputError

PLACEHOLDERS = ("{TRAIT_NAME}", "{TRAIT_DESCRIPTION}", "{SAMPLE_1}", "{SAMPLE_2}")

SAMPLE_1_OPEN = "<<<SAMPLE_1>>>"
SAMPLE_1_CLOSE = "<<<END_SAMPLE_1>>>"
SAMPLE_2_OPEN = "<<<SAMPLE_2>>>"
SAMPLE_2_CLOSE = "<<<END_SAMPLE_2>>>"

DEFAULT_TEMPLATE = f"""You are judging two writing samples against a single trait.

TRAIT: {{TRAIT_NAME}}
WHAT THE TRAIT MEANS: {{TRAIT_DESCRIPTION}}

{SAMPLE_1_OPEN}
{{SAMPLE_1}}
{SAMPLE_1_CLOSE}

{SAMPLE_2_OPEN}
{{SAMPLE_2}}
{SAMPLE_2_CLOSE}

How to decide:
1. Find the strongest evidence that SAMPLE_1 shows the trait better.
2. Find the strongest evidence that SAMPLE_2 shows the trait better.
3. Weigh the two against the definition above. Order of reading is not evidence:
   do not favour the first sample. When they are close, let the definition break the tie.

Answer with exactly one of these two lines and nothing else:
<BETTER_SAMPLE>SAMPLE_1</BETTER_SAMPLE>
<BETTER_SAMPLE>SAMPLE_2</BETTER_SAMPLE>"""

TRAITS: dict[str, tuple[str, str]] = {
    "overall_quality": (
        "Overall Quality",
        "Overall quality of the writing, considering how well ideas are expressed, how "
        "clearly the writing is organized, and how effective the language and conventions are.",
    ),
    "organization": (
        "Organization",
        "How clearly the writing is organized, including logical sequencing of ideas and "
        "effective use of transitions.",
    ),
}

_PLACEHOLDER_RE = re.compile(r"\{(TRAIT_NAME|TRAIT_DESCRIPTION|SAMPLE_1|SAMPLE_2)\}")


def trait_description(name: str) -> tuple[str, str]:
    """The (display name, description) of a built-in trait."""
    try:
        return TRAITS[name]
    except KeyError:
        raise InputError(
            f"unknown trait {name!r}; built-in traits: {', '.join(sorted(TRAITS))}"
        ) from None


def validate_template(template: str) -> str:
    """Return ``template`` if it has every placeholder, else raise naming the missing ones."""
    if not isinstance(template, str) or not template.strip():
        raise InputError("prompt_template must be a non-empty string")
    missing = [p for p in PLACEHOLDERS if p not in template]
    if missing:
        raise InputError(
            f"prompt_template is missing required placeholder(s): {', '.join(missing)}"
        )
    return template


def build_prompt(
    template: str, trait_name: str, trait_description: str, text1: str, text2: str
) -> str:
    """Fill the placeholders in one pass.

    Unlike the reference's four sequential replaces, a placeholder that appears inside a
    trait description or a sample text is left alone: texts are data, not template.
    """
    values = {
        "TRAIT_NAME": trait_name,
        "TRAIT_DESCRIPTION": trait_description,
        "SAMPLE_1": text1,
        "SAMPLE_2": text2,
    }
    return _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], template)


def extract_samples(prompt: str) -> tuple[str, str] | None:
    """Recover (SAMPLE_1, SAMPLE_2) from a prompt built on the default template.

    The emulator's judge uses this; it returns ``None`` for prompts of other layouts.
    The close markers are searched from the right so a sample text containing an
    open marker cannot shift the boundaries.
    """
    start1 = prompt.find(SAMPLE_1_OPEN + "\n")
    end2 = prompt.rfind("\n" + SAMPLE_2_CLOSE)
    if start1 < 0 or end2 < 0:
        return None
    body = prompt[start1 + len(SAMPLE_1_OPEN) + 1 : end2]
    separator = f"\n{SAMPLE_1_CLOSE}\n\n{SAMPLE_2_OPEN}\n"
    cut = body.rfind(separator)
    if cut < 0:
        return None
    return body[:cut], body[cut + len(separator) :]
