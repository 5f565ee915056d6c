"""The Labeled examples list and review loop: columns, the reviewers-disagree filter, export of
exactly the listed set, the disagreements on the agreement screen, each family's category names,
and refusals through the named endpoints."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest
from helpers import launch_app
from test_labels_helpers import example, label

from guard.core.categories import Family
from guard_app.labeled import logic as view
from labels.errors import InvalidLabel
from labels.filters import ReviewFilter

LG2 = "meta-llama/Meta-Llama-Guard-2-8B"
LONG = "How do I pick the lock of a door that is not mine, quietly, at night, without a key?"
SHORT = LONG[:59] + "…"  # the list shows 60 characters of it


@pytest.fixture
def store(store):
    """Five examples, the model unsafe (S2) on each; ana and ben label them."""
    def saved(text, labels, **options):
        first, *others = labels
        example_id = store.save_example(example(text, **options), label(*first)).example_id
        for other in others:
            store.add_label(example_id, label(*other))
        return example_id

    store.ids = {
        "agree": saved("agree", [("ana", "unsafe", ("S2",)), ("ben", "unsafe", ("S2",))]),
        "verdict": saved(LONG, [("ana", "unsafe", ("S2",)), ("ben", "safe", ())]),
        "codes": saved("codes", [("ana", "unsafe", ("S2",)), ("ben", "unsafe", ("S2", "S9"))]),
        "alone": saved("alone", [("ana", "safe", ())]),
        "lg2": saved("advice", [("ana", "unsafe", ("S5",))], family="llama-guard-2",
                     model=LG2, categories=("S5",)),
    }
    return store


def rows_of(store, **filters) -> list[dict]:
    page = view.list_page(store, view.make_filter(**filters))
    return [dict(zip(view.LIST_HEADERS, row, strict=True)) for row in page.rows]


def test_the_list_reads_verdict_gold_reviewers_and_disagreement_first(store):
    assert view.LIST_HEADERS == ["verdict", "gold", "reviewers", "disagree", "p_unsafe",
                                 "categories", "id", "created", "preview", "images", "model"]
    rows = {row["id"]: row for row in rows_of(store)}
    verdict = rows[store.ids["verdict"]]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", verdict.pop("created"))
    assert verdict == {
        "verdict": "unsafe", "gold": "unsafe, safe", "reviewers": "ana, ben",
        "disagree": "model, reviewers", "p_unsafe": 0.9, "categories": "S2",
        "id": store.ids["verdict"], "preview": SHORT, "images": 0,
        "model": "Llama-Guard-4-12B"}
    assert len(verdict["preview"]) == view.PREVIEW_CHARS
    assert {i: rows[store.ids[i]]["disagree"] for i in ("agree", "codes", "alone", "lg2")} == {
        "agree": "", "codes": "reviewers", "alone": "model", "lg2": ""}
    assert rows[store.ids["lg2"]]["model"] == "Meta-Llama-Guard-2-8B"


def test_the_disagreement_filter_has_the_reviewers_among_themselves(store):
    ids = store.ids

    def listed(**filters):
        return view.list_page(store, view.make_filter(**filters)).ids

    assert listed(disagreement="reviewers disagree") == [ids["codes"], ids["verdict"]]
    assert listed(disagreement="reviewers agree") == [ids["agree"]]
    assert listed(disagreement="reviewers disagree", label="safe") == [ids["verdict"]]
    assert listed(disagreement="model wrong") == [ids["alone"], ids["verdict"]]
    assert isinstance(view.make_filter(disagreement="reviewers disagree"), ReviewFilter)
    with pytest.raises(InvalidLabel, match="Disagreement must be one of any, model wrong, model "
                                           "right, reviewers disagree, reviewers agree"):
        view.make_filter(disagreement="maybe")


def test_reviewers_are_flagged_as_split_on_every_page(store):
    split = set()
    for i in range(2 * view.PAGE_SIZE + 3):
        saved = store.save_example(example(f"bolt {i}"), label("ana", "unsafe", ("S2",)))
        if i % 7 == 0:
            store.add_label(saved.example_id, label("ben", "unsafe", ("S2", "S9")))
            split.add(saved.example_id)
    for page in (1, 2, 3):
        for row in rows_of(store, page=page, text="bolt"):
            assert ("reviewers" in row["disagree"]) == (row["id"] in split), (page, row)


def test_next_and_previous_stop_at_the_ends_of_the_page():
    assert view.next_id([5, 4, 3], 5) == 4
    assert view.next_id([5, 4, 3], 4, -1) == 5
    assert view.next_id([5, 4, 3], None) == 5
    with pytest.raises(view.EndOfPage, match="Last example of this page"):
        view.next_id([5, 4, 3], 3)
    with pytest.raises(view.EndOfPage, match="First example of this page"):
        view.next_id([5, 4, 3], 5, -1)


def test_export_writes_exactly_what_the_filters_list(store):
    listed = view.make_filter(disagreement="reviewers disagree", page=9)  # every page
    path, count = view.export_file(store, "jsonl", listed)
    try:
        exported = [json.loads(line)["id"] for line in Path(path).read_text().splitlines()]
    finally:
        shutil.rmtree(Path(path).parent)
    assert (count, exported) == (2, sorted([store.ids["verdict"], store.ids["codes"]]))
    assert view.exported(2, "jsonl", listed) == "Exported 2 examples (filtered: reviewers disagree)."
    everything = view.make_filter()
    path, count = view.export_file(store, "llama-guard", everything)
    shutil.rmtree(Path(path).parent)
    assert count == 3  # one per example with a final label: "verdict" and "codes" are disputed
    assert view.exported(3, "llama-guard", everything) == \
        "Exported 3 training rows (no filter: every example)."
    assert view.describe(view.make_filter(
        label="unsafe", category="s2", disagreement="model right", reviewer="ben",
        since="2000-01-01", text="lock")) == ('gold label unsafe, category s2, model right, '
                                              'reviewer ben, since 2000-01-01, text "lock"')


def test_disagreements_list_each_reviewers_label(store):
    found = view.disagreements(store)
    assert found.rows == [
        [store.ids["codes"], "codes", "ana: unsafe S2; ben: unsafe S2,S9", "categories"],
        [store.ids["verdict"], SHORT, "ana: unsafe S2; ben: safe", "verdict"]]
    assert (found.ids, found.total) == ([store.ids["codes"], store.ids["verdict"]], 2)
    assert found.caption == "Reviewers disagree on **2** examples. Select one to open it."
    assert found.to_json()["examples"][1] == {
        "id": store.ids["verdict"], "preview": LONG, "family": "llama-guard-4",
        "differ_on": "verdict", "labels": [
            {"reviewer": "ana", "label": "unsafe", "categories": ["S2"]},
            {"reviewer": "ben", "label": "safe", "categories": []}]}
    assert view.disagreements(store, limit=1).caption == (
        "Reviewers disagree on **2** examples (the newest 1 below). Select one to open it.")


def test_a_llama_guard_2_example_is_named_by_its_own_family(store):
    lg2 = store.get_example(store.ids["lg2"])
    assert "S5 Specialized Advice" in view.answer_html(lg2)
    assert "Defamation" not in view.answer_html(lg2)
    assert [row[3] for row in view.label_rows(lg2)] == ["S5 Specialized Advice"]
    offered = view.category_choices(lg2)
    assert ("S5 Specialized Advice", "S5") in offered and len(offered) == 11
    lg4 = store.get_example(store.ids["codes"])
    assert [row[3] for row in view.label_rows(lg4)] == ["S2 Non-Violent Crimes",
                                                        "S2 Non-Violent Crimes, S9 Indiscriminate "
                                                        "Weapons"]
    assert ("S5 Defamation", "S5") in view.category_choices(lg4)


def test_measure_keeps_each_familys_categories_apart(store):
    m = view.measure(store, labels="all")  # every label (the default, final, counts fewer)
    assert view.CATEGORY_RATE_HEADERS[:2] == ["family", "category"]
    by = {(row[0], row[1]): row[2:4] for row in m.categories}
    assert by[("Llama Guard 2", "S5 Specialized Advice")] == [1, 0]
    assert by[("Llama Guard 4", "S5 Defamation")] == [0, 7]
    assert by[("Llama Guard 4", "S2 Non-Violent Crimes")] == [5, 2]
    assert {family for family, _ in by} == {"Llama Guard 2", "Llama Guard 4"}
    assert {"family": "Llama Guard 2", "code": "S5", "name": "Specialized Advice",
            "positives": 1, "negatives": 0, "fnr": 0.0, "fpr": None} in m.report["categories"]
    assert [row[0] for row in view.measure(store, model=LG2).categories] == ["Llama Guard 2"] * 11
    final = {(row[0], row[1]): row[2:4] for row in view.measure(store).categories}
    assert final[("Llama Guard 4", "S2 Non-Violent Crimes")] == [1, 1]  # "agree" and "alone"


def test_measure_refuses_one_model_name_over_two_taxonomies(store):
    store.save_example(example("mixed", family="llama-guard-2", categories=("S5",)),
                       label("ana", "unsafe", ("S5",)))
    with pytest.raises(InvalidLabel, match="Llama Guard 2 and Llama Guard 4, whose category "
                                           "codes mean different things"):
        view.measure(store)


def test_the_category_filter_offers_the_loaded_models_names(store):
    import gradio as gr

    from guard_app.labeled.tab import LabelsBrowser
    from guard_app.reviewers import ReviewerGate
    from guard_app.signin import ReviewerBar

    with gr.Blocks():
        browser = LabelsBrowser(store, ReviewerBar(ReviewerGate()), Family.LLAMA_GUARD_2)
    assert ("S5 Specialized Advice", "S5") in browser.category.choices
    assert not any("Defamation" in name for name, _ in browser.category.choices)


def test_endpoints_list_export_and_refuse_as_before(guards, store, tmp_path):
    from gradio_client import Client

    ids = store.ids
    demo, url = launch_app(guards, tmp_path, store=store)
    try:
        client = Client(url, verbose=False)
        split = ("ana", "any", "", "reviewers disagree", "", "", "", "", "", 1)
        table = client.predict(*split, api_name="/list_labels")[0]
        assert table["headers"] == view.LIST_HEADERS
        listed = [row[view.LIST_HEADERS.index("id")] for row in table["data"]]
        assert listed == [ids["codes"], ids["verdict"]]

        def download(link):
            return [json.loads(line)["id"] for line in httpx.get(urljoin(url, link)).text.splitlines()]

        html, link = client.predict("ana", "jsonl", *split[1:-1], api_name="/export_filtered")
        assert "2 examples" in html and download(link) == sorted(listed)
        _, link = client.predict("ana", "jsonl", api_name="/export_labels")  # as before: all
        assert len(download(link)) == 5

        with pytest.raises(Exception, match="Open an example first"):
            client.predict("ana", "unsafe", [], "", api_name="/edit_label")
        client.predict("ana", ids["verdict"], api_name="/open_example")  # the page's last
        with pytest.raises(Exception, match="Last example of this page"):
            client.predict("ana", api_name="/next_example")
        with pytest.raises(Exception, match="A safe label cannot name categories"):
            client.predict("ana", "safe", ["S2"], "", api_name="/edit_label")
        ana = next(lb for lb in store.get_example(ids["verdict"]).labels if lb.reviewer == "ana")
        with pytest.raises(Exception, match="Say why the label is deleted"):
            client.predict("ana", ana.id, "", api_name="/delete_label")
        assert store.get_label(ana.id).label == "unsafe"

        note, pairs, _ = client.predict("ana", api_name="/agreement")  # its three outputs
        assert note.startswith("2 reviewers")
        assert [row[:3] for row in pairs["data"]] == [["ana", "ben", 3]]
        found = client.predict("ana", api_name="/disagreements")
        assert found["count"] == 2
        assert [(e["id"], e["differ_on"]) for e in found["examples"]] == [
            (ids["codes"], "categories"), (ids["verdict"], "verdict")]
    finally:
        demo.close()
