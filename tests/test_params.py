"""The one parameter definition: validation, normalisation and the exact JSON body."""

from __future__ import annotations

import pytest

from nanobanana_magic import GenerationRequest, InvalidRequestError
from nanobanana_magic.core.params import ASPECT_RATIOS, BY_NAME, OUTPUT_FORMATS, PARAMETERS, RESOLUTIONS


def test_body_has_every_field_in_camel_case_with_defaults():
    body = GenerationRequest(prompt="a red apple").to_body()
    assert body == {
        "prompt": "a red apple",
        "imageUrls": [],
        "aspectRatio": "auto",
        "resolution": "1K",
        "googleSearch": False,
        "outputFormat": "png",
    }


def test_callback_url_is_only_in_the_body_when_given():
    assert "callBackUrl" not in GenerationRequest(prompt="x").to_body()
    body = GenerationRequest(prompt="x", callback_url="https://example.org/hook").to_body()
    assert body["callBackUrl"] == "https://example.org/hook"


@pytest.mark.parametrize("ratio", ASPECT_RATIOS)
def test_every_aspect_ratio_is_accepted(ratio):
    assert GenerationRequest(prompt="x", aspect_ratio=ratio).to_body()["aspectRatio"] == ratio


@pytest.mark.parametrize("given, sent", [(r, r) for r in RESOLUTIONS] + [("1k", "1K"), ("2k", "2K"), ("4k", "4K")])
def test_resolution_is_case_insensitive_and_sent_upper_case(given, sent):
    assert GenerationRequest(prompt="x", resolution=given).to_body()["resolution"] == sent


@pytest.mark.parametrize(
    "given, sent", [("png", "png"), ("jpg", "jpg"), ("jpeg", "jpg"), ("JPEG", "jpg"), ("PNG", "png")]
)
def test_output_format_accepts_jpeg_as_jpg(given, sent):
    assert GenerationRequest(prompt="x", output_format=given).to_body()["outputFormat"] == sent


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("aspect_ratio", "7:3", ["aspect ratio '7:3'", "1:1", "21:9", "auto"]),
        ("resolution", "8K", ["resolution '8K'", "1K 2K 4K"]),
        ("output_format", "gif", ["output format 'gif'", "png jpg"]),
    ],
)
def test_unsupported_choice_names_the_field_and_the_allowed_values(field, value, words):
    with pytest.raises(InvalidRequestError) as info:
        GenerationRequest(prompt="x", **{field: value})
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_prompt_of_20000_characters_is_accepted_and_20001_refused():
    assert len(GenerationRequest(prompt="a" * 20_000).prompt) == 20_000
    with pytest.raises(InvalidRequestError, match="20,001 characters; the API accepts at most 20,000"):
        GenerationRequest(prompt="a" * 20_001)


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_empty_prompt_is_refused(prompt):
    with pytest.raises(InvalidRequestError, match="prompt is empty"):
        GenerationRequest(prompt=prompt)


def test_fourteen_reference_images_are_accepted_and_fifteen_refused():
    urls = [f"https://example.org/{n}.png" for n in range(15)]
    assert len(GenerationRequest(prompt="x", image_urls=urls[:14]).to_body()["imageUrls"]) == 14
    with pytest.raises(InvalidRequestError, match="15 reference images given; the API accepts at most 14"):
        GenerationRequest(prompt="x", image_urls=urls)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/a.png", "example.org/a.png", "http://", ""])
def test_reference_images_must_be_http_urls(url):
    with pytest.raises(InvalidRequestError, match="not an http\\(s\\) URL"):
        GenerationRequest(prompt="x", image_urls=[url])


@pytest.mark.parametrize("url", ["javascript:alert(1)", "file:///tmp/x", "not a url"])
def test_callback_url_must_be_http(url):
    with pytest.raises(InvalidRequestError, match="callback URL"):
        GenerationRequest(prompt="x", callback_url=url)


def test_google_search_accepts_booleans_and_their_spellings():
    assert GenerationRequest(prompt="x", google_search=True).to_body()["googleSearch"] is True
    assert GenerationRequest(prompt="x", google_search="false").to_body()["googleSearch"] is False
    with pytest.raises(InvalidRequestError, match="Google Search must be true or false"):
        GenerationRequest(prompt="x", google_search="maybe")


def test_unknown_parameter_is_refused_with_the_known_ones():
    with pytest.raises(InvalidRequestError, match="unknown parameter 'size'.*aspect_ratio"):
        GenerationRequest(prompt="x", size="big")


def test_request_is_immutable_and_replace_validates_again():
    request = GenerationRequest(prompt="x")
    with pytest.raises(AttributeError):
        request.prompt = "y"
    assert request.replace(resolution="2k").resolution == "2K"
    with pytest.raises(InvalidRequestError):
        request.replace(resolution="3K")


def test_from_body_round_trips():
    request = GenerationRequest(
        prompt="p",
        image_urls=["https://a.org/1.png"],
        aspect_ratio="3:2",
        resolution="4K",
        google_search=True,
        output_format="jpg",
        callback_url="https://a.org/cb",
    )
    assert GenerationRequest.from_body(request.to_body()) == request


def test_equal_requests_share_a_canonical_json():
    a = GenerationRequest(prompt="p", resolution="2k")
    b = GenerationRequest(prompt="p", resolution="2K")
    assert a.canonical_json() == b.canonical_json() and hash(a) == hash(b)


def test_every_parameter_has_a_json_name_label_help_and_a_valid_default():
    for param in PARAMETERS:
        assert param.json_name and param.label and param.help
        if param.name != "prompt":
            param.clean(param.default)
    assert [p.json_name for p in PARAMETERS] == [
        "prompt",
        "imageUrls",
        "aspectRatio",
        "resolution",
        "googleSearch",
        "outputFormat",
        "callBackUrl",
    ]
    assert BY_NAME["output_format"].choices == OUTPUT_FORMATS


def test_flags_match_the_interface():
    flags = {p.name: p.flags for p in PARAMETERS}
    assert flags == {
        "prompt": (),
        "image_urls": ("-i", "--image"),
        "aspect_ratio": ("-a", "--aspect-ratio"),
        "resolution": ("-r", "--resolution"),
        "google_search": ("-g", "--google-search"),
        "output_format": ("-f", "--format"),
        "callback_url": ("--callback-url",),
    }
