import io
import json

import pytest
from PIL import Image

from guard import InvalidConversation, InvalidImage, from_messages, load_conversation_file
from guard.core.conversation import Conversation, Turn, assistant, user
from guard.core.images import MAX_IMAGE_PIXELS, load_image


def png(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


RGB = Image.new("RGB", (8, 8), (10, 20, 30))


@pytest.mark.parametrize("turns, message", [
    ([], "The conversation is empty"),
    ([assistant("hi")], "Message 1 must be a user message"),
    ([user("a"), user("b")], "Message 2 \\(user\\): roles must alternate"),
    ([user("a"), assistant("b"), assistant("c")], "Message 3 should be a user message"),
    ([user("   ")], "Message 1 \\(user\\): the text is empty"),
    ([user("", RGB)], "has images but no text"),
    ([Turn("system", "be nice")], "Llama Guard has no system messages"),
    ([Turn("tool", "x")], "unknown role 'tool'"),
    ([user("a", RGB, RGB, RGB), assistant("b", RGB, RGB), user("c", RGB)],
     "Message 3 \\(user\\): this makes 6 images, more than the 5"),
])
def test_validation_errors(turns, message):
    with pytest.raises(InvalidConversation, match=message):
        Conversation.build(turns)


def test_five_images_are_fine():
    conversation = Conversation.build([user("a", RGB, RGB, RGB), assistant("b", RGB, RGB)])
    assert len(conversation.images) == 5 and conversation.judged_role == "Agent"


def test_from_messages_reads_files_relative_to_the_json(tmp_path):
    (tmp_path / "a.png").write_bytes(png(RGB))
    (tmp_path / "conv.json").write_text(json.dumps([
        {"role": "user", "content": [{"type": "text", "text": "  look  "},
                                     {"type": "image", "path": "a.png"}]},
        {"role": "assistant", "content": "plain string content"},
    ]))
    conversation = load_conversation_file(tmp_path / "conv.json")
    assert [(t.role, t.text, len(t.images)) for t in conversation.turns] == [
        ("user", "look", 1), ("assistant", "plain string content", 0)]
    assert conversation.images[0].getpixel((0, 0)) == (10, 20, 30)


def test_sixth_image_is_refused_before_decoding(tmp_path):
    parts = [{"type": "text", "text": "x"}] + [{"type": "image", "path": "missing.png"}] * 6
    with pytest.raises(InvalidConversation, match="6 images"):
        from_messages([{"role": "user", "content": parts[:1] + parts[1:]}],
                      images={"missing.png": png(RGB)})


@pytest.mark.parametrize("payload, message", [
    ("not json", "not valid JSON"),
    ('{"role": "user"}', "must be a JSON list"),
    ('[{"content": "x"}]', "must be an object with 'role'"),
    ('[{"role": "user", "content": [{"type": "audio"}]}]', "got 'audio'"),
    ('[{"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "image"}]}]',
     "needs a 'path'"),
    ('[{"role": "user", "content": [{"type": "text", "text": "x"}, '
     '{"type": "image", "path": "https://example.com/a.png"}]}]', "web address"),
    ('[{"role": "user", "content": [{"type": "text", "text": "x"}, '
     '{"type": "image", "path": "nope.png"}]}]', "was not found"),
])
def test_bad_conversation_files(tmp_path, payload, message):
    path = tmp_path / "conv.json"
    path.write_text(payload)
    with pytest.raises((InvalidConversation, InvalidImage), match=message):
        load_conversation_file(path)


def test_missing_conversation_file(tmp_path):
    with pytest.raises(InvalidConversation, match="No conversation file"):
        load_conversation_file(tmp_path / "nope.json")


def test_not_an_image():
    with pytest.raises(InvalidImage, match="not an image Guard Lab can read"):
        load_image(b"%PDF-1.4 hello", name="doc.pdf")


def test_empty_file():
    with pytest.raises(InvalidImage, match="empty file"):
        load_image(b"", name="e.png")


def test_truncated_image():
    data = png(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")
    with pytest.raises(InvalidImage, match="corrupt or truncated"):
        load_image(data[: len(data) // 2], name="half.jpg")


def test_decompression_bomb_is_refused_without_decoding():
    side = int(MAX_IMAGE_PIXELS ** 0.5) + 100
    bomb = png(Image.new("1", (side, side)))  # a few KB on disk, 40+ megapixels decoded
    assert len(bomb) < 1_000_000
    with pytest.raises(InvalidImage, match="too many pixels"):
        load_image(bomb, name="bomb.png")


def test_modes_become_rgb():
    cmyk = load_image(png(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "JPEG"))
    assert cmyk.mode == "RGB" and cmyk.getpixel((0, 0))[0] > 200
    palette = Image.new("P", (4, 4))
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    palette.putpixel((0, 0), 1)
    assert load_image(png(palette)).getpixel((0, 0)) == (0, 255, 0)
    transparent = load_image(png(Image.new("RGBA", (4, 4), (255, 0, 0, 0))))
    assert transparent.getpixel((0, 0)) == (255, 255, 255)  # composited on white
    deep = Image.new("I;16", (4, 4), 65535)
    assert load_image(png(deep)).getpixel((0, 0)) == (255, 255, 255)  # scaled, not clipped
    mid = Image.new("I;16", (4, 4), 32768)
    assert load_image(png(mid)).getpixel((0, 0)) == (128, 128, 128)


def test_exif_orientation_is_respected():
    image = Image.new("RGB", (20, 10), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    loaded = load_image(png(image, "JPEG", exif=exif.tobytes()))
    assert loaded.size == (10, 20)
