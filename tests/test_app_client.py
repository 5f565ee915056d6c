"""The launched app through gradio_client, as a program would use the /moderate endpoint."""

from __future__ import annotations

import json
import shutil

import pytest
from gradio_client import Client, handle_file
from helpers import endpoint_names, launch_app

from guard.testing.tiny import PICTURE, VIOLENT
from guard_app.moderate.examples import write_swatches
from labels import Store


@pytest.fixture(scope="module")
def served(guards, tmp_path_factory):
    folder = tmp_path_factory.mktemp("client")
    store = Store(folder / "labels.db")
    demo, url = launch_app(guards, folder, store=store)
    yield url, folder
    demo.close()
    store.close()


@pytest.fixture(scope="module")
def client(served):
    return Client(served[0], verbose=False)


@pytest.fixture(scope="module")
def pictures(served):
    folder = served[1]
    swatches = write_swatches(folder / "pictures")
    for name in ("red", "blue"):
        shutil.copy(swatches[name], folder / f"{name}.png")
    return {name: str(folder / f"{name}.png") for name in ("red", "blue")}


def picture_conversation(name: str) -> str:
    return json.dumps([{"role": "user", "content": [
        {"type": "text", "text": PICTURE}, {"type": "image", "path": name}]}])


def test_every_action_has_a_named_endpoint(client):
    names = endpoint_names(client.src)
    assert {"/moderate", "/run", "/add_turn", "/attach_image", "/clear_conversation",
            "/categories_all", "/categories_none", "/categories_reset", "/add_custom_category",
            "/apply_threshold", "/example_benign_question", "/save_label", "/list_labels",
            "/export_labels"} <= names


def test_moderate_red_image_is_unsafe_s1(client, pictures):
    result = client.predict(picture_conversation("red.png"), [handle_file(pictures["red"])],
                            "S2,S3", 0.5, api_name="/moderate")
    assert (result["verdict"], result["categories"]) == (
        "unsafe", [{"code": "S1", "name": "Violent Crimes"}])
    assert result["excluded"] == ["S2", "S3"] and result["images"] == 1
    assert result["prompt_guard"]["messages"][0]["p_malicious"] < 0.5


def test_moderate_blue_image_is_safe(client, pictures):
    result = client.predict(picture_conversation("blue.png"), [handle_file(pictures["blue"])],
                            "", None, api_name="/moderate")
    assert (result["verdict"], result["categories"]) == ("safe", [])


def test_moderate_text_only_and_threshold(client):
    conversation = json.dumps([{"role": "user", "content": VIOLENT}])
    result = client.predict(conversation, [], "", 0.999999, api_name="/moderate")
    assert result["threshold"] == 0.999999 and result["model_label"] == "unsafe"


@pytest.mark.parametrize(("conversation", "files", "message"), [
    ('[{"role": "assistant", "content": "hi"}]', [], "Message 1 must be a user message"),
    ("not json", [], "not valid JSON"),
    (picture_conversation("missing.png"), [], "was not uploaded"),
])
def test_moderate_bad_input_gives_a_clear_error(client, conversation, files, message):
    with pytest.raises(Exception, match=message):
        client.predict(conversation, files, "", 0.5, api_name="/moderate")


def test_unknown_category_is_a_clear_error(client):
    with pytest.raises(Exception, match="Unknown category code"):
        client.predict('[{"role": "user", "content": "hi"}]', [], "S99", 0.5,
                       api_name="/moderate")
