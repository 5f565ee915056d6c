"""`guard.core.categories.choices`: the (label, code) pairs every screen offers, per family."""

import pytest

from guard.core.categories import Family, categories_for, choices, custom_codes
from guard.core.prompts import CustomCategory, active_categories

# The model cards' names (guard-models.md): Llama Guard 4 and 3 share S1-S14, the 3 1B stops
# at S13, Llama Guard 2 has its own 11.
LG4 = [("S1 Violent Crimes", "S1"), ("S2 Non-Violent Crimes", "S2"),
       ("S3 Sex-Related Crimes", "S3"), ("S4 Child Sexual Exploitation", "S4"),
       ("S5 Defamation", "S5"), ("S6 Specialized Advice", "S6"), ("S7 Privacy", "S7"),
       ("S8 Intellectual Property", "S8"), ("S9 Indiscriminate Weapons", "S9"),
       ("S10 Hate", "S10"), ("S11 Suicide & Self-Harm", "S11"), ("S12 Sexual Content", "S12"),
       ("S13 Elections", "S13"), ("S14 Code Interpreter Abuse", "S14")]
LG2 = [("S1 Violent Crimes", "S1"), ("S2 Non-Violent Crimes", "S2"),
       ("S3 Sex-Related Crimes", "S3"), ("S4 Child Sexual Exploitation", "S4"),
       ("S5 Specialized Advice", "S5"), ("S6 Privacy", "S6"), ("S7 Intellectual Property", "S7"),
       ("S8 Indiscriminate Weapons", "S8"), ("S9 Hate", "S9"), ("S10 Suicide & Self-Harm", "S10"),
       ("S11 Sexual Content", "S11")]
S14_OFF = "S14 Code Interpreter Abuse (off while the conversation has images)"


@pytest.mark.parametrize("family, expected", [
    (Family.LLAMA_GUARD_4, LG4),
    (Family.LLAMA_GUARD_3, LG4),
    (Family.LLAMA_GUARD_3_1B, LG4[:13]),
    (Family.LLAMA_GUARD_2, LG2),
])
def test_each_family_offers_its_table_with_the_model_card_names(family, expected):
    assert choices(family) == expected
    assert choices(family.value) == expected  # the family's name does as well


def test_with_images_s14_is_still_offered_but_says_it_is_off():
    assert choices(Family.LLAMA_GUARD_4, images=True) == LG4[:13] + [(S14_OFF, "S14")]
    # The families without S14 have nothing to turn off.
    assert choices(Family.LLAMA_GUARD_2, images=True) == LG2


@pytest.mark.parametrize("family, first", [
    (Family.LLAMA_GUARD_4, 15), (Family.LLAMA_GUARD_3, 15), (Family.LLAMA_GUARD_3_1B, 14),
    (Family.LLAMA_GUARD_2, 12),
])
def test_custom_categories_are_numbered_after_the_familys_last_code(family, first):
    custom = ["Medical advice", CustomCategory(" Competitors ", "Naming a rival."),
              {"name": "Refunds", "description": ""}]
    offered = choices(family, custom)
    assert offered[:len(categories_for(family))] == choices(family)
    assert offered[len(categories_for(family)):] == [
        (f"S{first} Medical advice", f"S{first}"), (f"S{first + 1} Competitors", f"S{first + 1}"),
        (f"S{first + 2} Refunds", f"S{first + 2}")]
    assert custom_codes(family, 3) == tuple(f"S{first + i}" for i in range(3))
    # The same numbers the prompt gives them.
    prompt = active_categories(family, custom=[CustomCategory(n) for n in
                                               ("Medical advice", "Competitors", "Refunds")])
    assert [c.code for c in prompt if c.custom] == list(custom_codes(family, 3))


def test_excluded_codes_are_left_out_and_the_others_keep_their_numbers():
    offered = choices(Family.LLAMA_GUARD_4, ["Refunds"], excluded=["s2", "S15", "S14"])
    assert [code for _, code in offered] == [f"S{i}" for i in (1, *range(3, 14))]
    assert choices(Family.LLAMA_GUARD_2, excluded="S1,S3")[0] == ("S2 Non-Violent Crimes", "S2")


def test_no_custom_categories_gives_no_codes():
    assert custom_codes(Family.LLAMA_GUARD_4, 0) == ()
    with pytest.raises(ValueError):
        choices("llama-guard-5")
