"""Every picture and local link in the README and the chapters points at a file that exists; GIFs are animated."""
import re

import imageio.v3 as iio
import pytest

from minivid.utils import REPO_ROOT

DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "chapters").glob("*.md"))]
LINK = re.compile(r"(?P<img>!?)\[[^\]]*\]\((?P<target>[^)\s]+)\)")
FENCE = re.compile(r"```.*?```", re.S)


def local_links(doc):
    text = FENCE.sub("", doc.read_text(encoding="utf-8"))
    for m in LINK.finditer(text):
        target = m.group("target").split("#")[0]
        if target and not re.match(r"[a-z]+:", target):
            yield bool(m.group("img")), target


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_local_links_and_pictures_exist(doc):
    missing = [t for _, t in local_links(doc) if not (doc.parent / t).exists()]
    assert not missing, f"{doc.name} links to files that do not exist: {missing}"


def test_gifs_in_the_chapters_are_animated_clips():
    gifs = {(d.parent / t).resolve() for d in DOCS for img, t in local_links(d) if img and t.endswith(".gif")}
    assert gifs, "the video chapters show sample clips as GIFs"
    for g in gifs:
        frames = iio.imread(g, index=None)
        assert frames.ndim == 4 and frames.shape[0] >= 2, f"{g.name} is not an animation: {frames.shape}"
