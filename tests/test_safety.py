"""Safety filter for explanations (recgpt_cli.safety, §2.4.1 Table 6)."""

from __future__ import annotations

import pytest

from recgpt_cli.safety import SafetyConfig, check_explanation, pii_terms_from_attributes, tidy_truncated


@pytest.mark.parametrize(
    ("text", "failures"),
    [
        ("Roam mountains and rivers with this backpack", []),
        ("Temperature control for mom's peace of mind", []),
        ("", ["empty"]),
        ("   ", ["empty"]),
        ("Cute!", ["too_short"]),
        ("x" * 81, ["too_long"]),
        ("Mail me at jane.doe@example.com", ["pii_email"]),
        ("Call 138-1234-5678 for sizes", ["pii_phone"]),
        ("See www.shop.example for more", ["pii_url"]),
        ("Time-limited offer, quick buy!", ["hard_sell"]),
        ("Hurry, summer sandals are here", ["hard_sell"]),
        ("Don’t miss these cosy socks", ["hard_sell"]),
        ("Bag cutproof fireproof, lasts forever", ["exaggeration"]),
        ("100% effective sun protection", ["exaggeration"]),
        ("Bag bag good bag buy bag good", ["repetitive"]),
        ("This item is a fantastic [item name] for you", ["placeholder"]),
        # raw SmolLM2 answers the rules used to keep (build_aligned's self-training inputs, 2026-12-06)
        ("Building Blocks - A must-have Gadget", ["hard_sell"]),
        ("1. Context Understanding: The item is an item of the category of Phones", ["prompt_echo"]),
        ("This item is a pet cat, with a cat tree in the title, and it is a cat cat tree.", ["repetitive"]),
        ("So so soft for lazy Sundays at home", []),  # a two-letter word twice is speech, not a stutter
        ("Items that match your interest in hiking", []),  # "interest" alone is not the prompt's label
    ],
)
def test_rules(text: str, failures: list[str]) -> None:
    assert check_explanation(text).failures == failures


def test_pii_from_user_attributes_whole_words_only() -> None:
    terms = pii_terms_from_attributes({"name": "Ms Zhang", "age": 30, "location": "Hangzhou", "phone": ""})
    assert terms == ["Ms Zhang", "Zhang"]  # "Ms" is too short to match on its own; empty phone ignored
    assert check_explanation("MsZhang style, a dress for you", pii_terms=terms).failures == ["pii_term"]
    assert check_explanation("Zhangjiajie hiking boots for you", pii_terms=terms).failures == []
    assert check_explanation("Zhang, this dress suits you", pii_terms=terms).failures == ["pii_term"]
    # Location is context, not an identifier: the paper's own "Hangzhou summer atmosphere" is fine.
    assert check_explanation("Hangzhou summer atmosphere new releases", pii_terms=terms).ok


def test_title_echo_and_custom_bounds() -> None:
    title = "Linen-blend wide-leg coordinates set"
    assert check_explanation("Linen blend wide leg coordinates", title=title).failures == ["title_echo"]
    assert check_explanation("Breezy linen for Hangzhou summers", title=title).ok
    cfg = SafetyConfig(min_chars=2, max_chars=10)
    assert check_explanation("Short one!", config=cfg).ok
    assert check_explanation("Eleven chars", config=cfg).failures == ["too_long"]


def test_tidy_truncated_cuts_back_to_a_whole_word() -> None:
    assert tidy_truncated("Roam the hills, camping and hik", 31) == "Roam the hills, camping and"
    assert tidy_truncated("Short and whole", 80) == "Short and whole"
    assert tidy_truncated("Roam the hills, and", 19) == "Roam the hills"


# ---- issue 8: emoji, unfinished sentences, superlatives, brands and attributes the item does not have ----
BOOT = dict(title="Trailpeak Waterproof Hiking Boots", item_text="Sports Outdoor Hiking Boots Trailpeak",
            brands={"trailpeak", "nike", "velvet bloom"})


@pytest.mark.parametrize(
    ("text", "failures"),
    [
        ("Dry feet on every mountain trail", []),                      # kept
        ("Waterproof boots for your weekend trails", []),              # the item is waterproof: kept
        ("Trailpeak boots for rocky trails", []),                      # its own brand: kept
        ("🥾🥾🏔️⛰️🌲", ["too_short", "emoji"]),
        ("Great trails 🥾🏔️🌲⛰️🌄✨", ["emoji"]),
        ("Made for hikers who love the", ["unfinished"]),
        ("Comfort on long walks and", ["unfinished"]),
        ("Made by the best people in the world", ["superlative", "foreign_maker"]),
        ("The comfiest boots for your hikes", ["superlative"]),
        ("Nike Air Max for your next hike", ["foreign_brand"]),
        ("Leather boots for rainy walks", ["foreign_attribute"]),
        ("Red boots to brighten the trail", ["foreign_attribute"]),
        ("Boots with a 12-layer sole for long hikes", ["foreign_number"]),
        ("Boots designed by a team of mountain guides", ["foreign_maker"]),
        ("Boots made by Trailpeak for rocky paths", []),  # its own brand made them
    ],
)
def test_factuality_and_clarity_rules(text: str, failures: list[str]) -> None:
    assert check_explanation(text, **BOOT).failures == failures  # type: ignore[arg-type]


def test_a_category_entry_must_not_just_repeat_its_item_information() -> None:
    facts = "category: Home > Bedroom > Bed Pillows; example items: Cloudrest Down Pillow, Queen"
    assert check_explanation("📐 Bed Pillows", item_text=facts).failures == ["title_echo"]
    assert check_explanation("Down pillow, queen", item_text=facts).failures == ["title_echo"]
    assert check_explanation("Softer nights for a tired sleeper", item_text=facts).ok


def test_an_explanation_must_not_call_its_item_another_category() -> None:
    """What the sentence says the item is ("is a ...") must not be a catalogue category of another department: a
    radiator is no dog toy. Naming the user's interest elsewhere links it; its own category is fine, and so is a
    sibling of its department (a film filed under Comedy may be an action movie)."""
    facts = "category: Home > Heating & Cooling > Space Heaters; example items: Kitchora Oil-Filled Radiator"
    leaves = {"space heaters": "home", "dog toys": "pets", "board games": "toys", "fans": "home"}
    for text, failures in [("This item is a great dog toy for a dog.", ["foreign_category"]),
                           ("It's a board game night warmer", ["foreign_category"]),
                           ("Warm evenings while the dog plays with its toys", []),
                           ("This item is a quiet space heater for cold nights.", []),
                           ("This item is a quiet fan for winter nights", []),  # same department: not this rule's
                           ("For your dog toys interest: a warm corner for naps", [])]:
        assert check_explanation(text, item_text=facts, categories=leaves).failures == failures, text
    assert check_explanation("This item is a great dog toy for a dog.", item_text=facts).ok  # no catalogue given


@pytest.mark.parametrize(
    ("text", "failures"),
    [
        ("This item is a bed pillow.", ["says_nothing"]),               # names the item, nothing more
        ("It is a great choice of pillows!", ["says_nothing"]),         # filler and the item's own word
        ("This item is a movie.", ["says_nothing"]),
        ("A down pillow, the way a pillow should feel", []),           # "way", "feel" say something
        ("Picked for you from Bed Pillows", []),                        # the fallback: "picked for you"
        ("This item is a pillow for side sleepers.", []),
    ],
)
def test_an_explanation_must_say_more_than_its_item(text: str, failures: list[str]) -> None:
    facts = "category: Home > Bedroom > Bed Pillows; example items: Cloudrest Down Pillow, Queen"
    assert check_explanation(text, item_text=facts).failures == failures
    assert "says_nothing" not in check_explanation(text).failures  # nothing to compare with: not checked


def test_cut_off_text_without_closing_punctuation_is_unfinished() -> None:
    assert check_explanation("Keeps your feet dry on every trail", cut_off=True).failures == ["unfinished"]
    assert check_explanation("Keeps your feet dry on every trail.", cut_off=True).failures == []
    assert check_explanation("Keeps your feet dry on every trail").failures == []
    # the rules need the item's facts: without them no brand or attribute is checked
    assert check_explanation("Leather boots for rainy walks").failures == []
