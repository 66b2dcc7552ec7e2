//! One fetched page: decoding its bytes and extracting what a reader sees.

use encoding_rs::{Encoding, UTF_8, WINDOWS_1252};
use scraper::{ElementRef, Html, Node, Selector};
use url::Url;

/// Elements whose content is not page text.
const SKIP: &[&str] = &[
    "script", "style", "nav", "header", "footer", "aside", "noscript", "template", "svg", "iframe",
    "form", "button", "select", "head",
];

/// Elements that break lines.
const BLOCK: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "main",
    "li",
    "ul",
    "ol",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "br",
    "tr",
    "table",
    "blockquote",
    "pre",
    "dd",
    "dt",
    "dl",
    "figcaption",
    "hr",
];

/// What a page says, extracted.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Page {
    pub url: String,
    pub title: String,
    pub description: String,
    pub headings: Vec<Heading>,
    /// The main text: no scripts, styles, navigation, headers or footers.
    pub text: String,
    /// Absolute http(s) links, without fragments, in page order.
    pub links: Vec<String>,
    /// The character encoding the bytes were decoded from.
    pub charset: String,
    /// The page's language (`<html lang>`), if it says.
    pub lang: Option<String>,
    /// The page's canonical URL (`<link rel=canonical>`), else its own.
    pub canonical: String,
    /// The main text cut at its headings, in page order (the text before
    /// the first heading is a section without a title). `text` is their
    /// texts joined.
    #[serde(skip)]
    pub sections: Vec<Section>,
    /// The share of the main text's characters that are link text: near 1
    /// on an index, a table of contents or a site map.
    pub link_density: f32,
    /// `<meta name="robots" content="noindex">`: the page asks not to be
    /// indexed.
    pub noindex: bool,
}

/// A part of the main text under one heading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The fragment that links to it: the heading's `id`, its own `¶`
    /// link's, or the enclosing section's.
    pub anchor: Option<String>,
    /// The heading's text (empty before the first heading).
    pub title: String,
    /// Its text, the heading's line first, one line per block.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Heading {
    pub level: u8,
    pub text: String,
}

/// Decodes a body as a browser would: a byte-order mark, else the
/// `charset` of the Content-Type, else a `<meta>` charset in the first
/// 1024 bytes, else UTF-8 when valid, else windows-1252.
pub fn decode(body: &[u8], content_type: Option<&str>) -> (String, String) {
    let declared = content_type
        .and_then(charset_param)
        .or_else(|| sniff_meta(body))
        .and_then(|label| Encoding::for_label(label.trim().as_bytes()));
    let encoding = match (Encoding::for_bom(body), declared) {
        (Some((bom, _)), _) => bom,
        (None, Some(e)) => e,
        (None, None) if std::str::from_utf8(body).is_ok() => UTF_8,
        (None, None) => WINDOWS_1252,
    };
    let (text, used, _) = encoding.decode(body);
    (text.into_owned(), used.name().to_string())
}

fn charset_param(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim().eq_ignore_ascii_case("charset")).then(|| v.trim().trim_matches('"').to_string())
    })
}

/// `<meta charset="x">` or `<meta http-equiv=... content="...; charset=x">`.
fn sniff_meta(body: &[u8]) -> Option<String> {
    let head = &body[..body.len().min(1024)];
    let lower: String = head
        .iter()
        .map(|b| (*b as char).to_ascii_lowercase())
        .collect();
    let mut from = 0;
    while let Some(at) = lower[from..].find("<meta") {
        let start = from + at;
        let end = lower[start..].find('>').map_or(lower.len(), |e| start + e);
        let tag = &lower[start..end];
        if let Some(c) = tag.find("charset=") {
            let value: String = tag[c + 8..]
                .trim_start_matches(['"', '\''])
                .chars()
                .take_while(|ch| !matches!(ch, '"' | '\'' | ' ' | ';' | '/' | '>'))
                .collect();
            if !value.is_empty() {
                return Some(value);
            }
        }
        from = end;
    }
    None
}

/// Extracts a page's parts; `selector` (CSS) picks the main text instead of
/// `<main>`, `<article>`, `[role=main]` or `<body>`.
pub fn extract(
    html: &str,
    url: &Url,
    selector: Option<&str>,
    charset: &str,
) -> Result<Page, String> {
    let doc = Html::parse_document(html);
    let chosen = match selector {
        Some(s) => Some(Selector::parse(s).map_err(|e| format!("invalid selector `{s}`: {e}"))?),
        None => None,
    };
    let roots: Vec<ElementRef> = match &chosen {
        Some(sel) => doc.select(sel).collect(),
        None => ["main", "article", "[role=main]", "body"]
            .iter()
            .find_map(|s| first(&doc, s))
            .into_iter()
            .collect(),
    };
    let mut walk = Walk::default();
    for root in &roots {
        collect(**root, &mut walk, false);
        walk.raw.push('\n');
    }
    let link_density = if walk.chars == 0 {
        0.0
    } else {
        walk.link_chars as f32 / walk.chars as f32
    };
    let sections = walk.sections();
    let text = sections
        .iter()
        .map(|s| s.text.as_str())
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    let noindex = doc
        .select(&Selector::parse("meta[name]").map_err(|e| e.to_string())?)
        .any(|m| {
            m.value().attr("name").is_some_and(|n| {
                n.eq_ignore_ascii_case("robots") || n.eq_ignore_ascii_case("wasmhive")
            }) && m
                .value()
                .attr("content")
                .is_some_and(|c| c.to_ascii_lowercase().contains("noindex"))
        });

    let title = first(&doc, "title")
        .map(|t| squash(&t.text().collect::<String>()))
        .filter(|t| !t.is_empty())
        .or_else(|| meta(&doc, "meta[property='og:title']"))
        .or_else(|| first(&doc, "h1").map(|h| squash(&h.text().collect::<String>())))
        .unwrap_or_default();
    let description = meta(&doc, "meta[name='description']")
        .or_else(|| meta(&doc, "meta[property='og:description']"))
        .unwrap_or_default();

    let mut headings = Vec::new();
    if let Ok(sel) = Selector::parse("h1, h2, h3") {
        for root in &roots {
            for h in root.select(&sel) {
                let level = h.value().name().as_bytes().get(1).map_or(1, |b| b - b'0');
                let mut walk = Walk::default();
                collect(*h, &mut walk, false);
                let text = squash(&walk.raw);
                if !text.is_empty() {
                    headings.push(Heading { level, text });
                }
            }
        }
    }

    let base = first(&doc, "base[href]")
        .and_then(|b| b.value().attr("href"))
        .and_then(|href| url.join(href).ok())
        .unwrap_or_else(|| url.clone());
    let mut links: Vec<String> = Vec::new();
    if let Ok(sel) = Selector::parse("a[href]") {
        for a in doc.select(&sel) {
            let Some(mut link) = a
                .value()
                .attr("href")
                .and_then(|h| base.join(h.trim()).ok())
            else {
                continue;
            };
            if !matches!(link.scheme(), "http" | "https") {
                continue;
            }
            link.set_fragment(None);
            let link = link.to_string();
            if !links.contains(&link) {
                links.push(link);
            }
        }
    }
    let lang = first(&doc, "html[lang]")
        .and_then(|h| h.value().attr("lang"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string);
    let canonical = first(&doc, "link[rel~='canonical'][href]")
        .and_then(|l| l.value().attr("href"))
        .and_then(|href| base.join(href.trim()).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .map_or_else(|| url.to_string(), |u| u.to_string());
    Ok(Page {
        url: url.to_string(),
        lang,
        canonical,
        title,
        description,
        headings,
        text,
        links,
        charset: charset.to_string(),
        sections,
        link_density,
        noindex,
    })
}

fn first<'a>(doc: &'a Html, selector: &str) -> Option<ElementRef<'a>> {
    let sel = Selector::parse(selector).ok()?;
    doc.select(&sel).next()
}

fn meta(doc: &Html, selector: &str) -> Option<String> {
    first(doc, selector)
        .and_then(|m| m.value().attr("content"))
        .map(squash)
        .filter(|s| !s.is_empty())
}

/// The text walk: what a reader sees, with where each heading starts.
#[derive(Default)]
struct Walk {
    raw: String,
    /// Per heading: where its line starts in `raw`, its anchor and text.
    heads: Vec<(usize, Option<String>, String)>,
    /// Non-space characters seen, and those inside links.
    chars: usize,
    link_chars: usize,
    in_link: bool,
}

impl Walk {
    fn push_text(&mut self, text: &str, in_pre: bool) {
        let seen = text.chars().filter(|c| !c.is_whitespace()).count();
        self.chars += seen;
        if self.in_link {
            self.link_chars += seen;
        }
        if in_pre {
            self.raw.push_str(text);
        } else {
            // A line break in the HTML source is a space (a soft break,
            // not the end of a sentence).
            self.raw.extend(
                text.chars()
                    .map(|c| if c == '\n' || c == '\r' { ' ' } else { c }),
            );
        }
    }

    /// The raw text cut at the headings, each part tidied.
    fn sections(&self) -> Vec<Section> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut current: (Option<String>, String) = (None, String::new());
        for (at, anchor, title) in &self.heads {
            let text = tidy(&self.raw[start..*at]);
            if !text.is_empty() || !current.1.is_empty() {
                out.push(Section {
                    anchor: current.0.take(),
                    title: std::mem::take(&mut current.1),
                    text,
                });
            }
            start = *at;
            current = (anchor.clone(), title.clone());
        }
        let text = tidy(&self.raw[start..]);
        if !text.is_empty() || !current.1.is_empty() {
            out.push(Section {
                anchor: current.0,
                title: current.1,
                text,
            });
        }
        out
    }
}

/// The fragment that links to heading `h`: its `id`, the target of its
/// own `¶` link, or the id of the element it heads (Sphinx's `<section
/// id>`, whose first child the heading is).
fn anchor_of(h: ElementRef<'_>) -> Option<String> {
    if let Some(id) = h.value().id() {
        return Some(id.to_string());
    }
    let own_link = h
        .children()
        .filter_map(ElementRef::wrap)
        .filter(|a| a.value().name() == "a")
        .filter_map(|a| a.value().attr("href"))
        .find_map(|href| href.strip_prefix('#').filter(|f| !f.is_empty()));
    if let Some(fragment) = own_link {
        return Some(fragment.to_string());
    }
    let parent = h.parent().and_then(ElementRef::wrap)?;
    let first = parent.children().filter_map(ElementRef::wrap).next()?;
    (first.id() == h.id())
        .then(|| parent.value().id().map(str::to_string))
        .flatten()
}

/// A link to a fragment of the page whose text is only symbols (`#`,
/// `¶`, `🔗`): a heading's permalink, chrome.
fn is_symbol_anchor(node: ego_tree::NodeRef<'_, Node>) -> bool {
    let Some(a) = ElementRef::wrap(node) else {
        return false;
    };
    a.value().name() == "a"
        && a.value().attr("href").is_some_and(|h| h.starts_with('#'))
        && !a.text().any(|t| t.chars().any(char::is_alphanumeric))
}

fn is_heading(name: &str) -> bool {
    matches!(name, "h1" | "h2" | "h3" | "h4" | "h5" | "h6")
}

/// Appends what a reader sees of `node`. Inside `<pre>` lines are kept;
/// Sphinx-style `¶` heading links are chrome.
fn collect(node: ego_tree::NodeRef<'_, Node>, walk: &mut Walk, in_pre: bool) {
    match node.value() {
        Node::Text(t) => walk.push_text(&t.text, in_pre),
        Node::Element(e) => {
            let name = e.name();
            let headerlink =
                e.has_class("headerlink", scraper::CaseSensitivity::AsciiCaseInsensitive);
            let hidden = headerlink
                || e.attr("hidden").is_some()
                || e.attr("aria-hidden")
                    .is_some_and(|v| v.eq_ignore_ascii_case("true"))
                || e.attr("role")
                    .is_some_and(|r| r.eq_ignore_ascii_case("navigation"));
            if SKIP.contains(&name) || hidden || is_symbol_anchor(node) {
                return;
            }
            let block = BLOCK.contains(&name);
            if block {
                walk.raw.push('\n');
            }
            if is_heading(name)
                && let Some(h) = ElementRef::wrap(node)
            {
                let mut own = Walk::default();
                for child in node.children() {
                    collect(child, &mut own, false);
                }
                let title = squash(&own.raw);
                if !title.is_empty() {
                    walk.heads.push((walk.raw.len(), anchor_of(h), title));
                }
            }
            let was_link = walk.in_link;
            walk.in_link |= name == "a" && e.attr("href").is_some();
            let in_pre = in_pre || name == "pre";
            for child in node.children() {
                collect(child, walk, in_pre);
            }
            walk.in_link = was_link;
            if block {
                walk.raw.push('\n');
            }
        }
        _ => {}
    }
}

/// Collapses runs of whitespace to one space.
fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One line per block, whitespace collapsed, empty lines dropped.
fn tidy(s: &str) -> String {
    s.lines()
        .map(squash)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HTML: &str = r#"<!doctype html><html><head>
<title> Shipping  policy </title>
<meta name="description" content="How we ship.">
<base href="/docs/">
<script>var x = "not text";</script><style>p { color: red }</style>
</head><body>
<nav><a href="/">Home</a> <a href="faq.html#top">FAQ</a></nav>
<header>Site header</header>
<main><h1>Shipping</h1><p>Orders ship in <b>two</b> days.</p>
<h2>Costs</h2><p>Free over 50 euro.</p><div hidden>secret</div>
<a href="https://other.example/x">elsewhere</a> <a href="mailto:a@b.c">mail</a></main>
<footer>Footer text</footer></body></html>"#;

    #[test]
    fn extracts_the_reader_view_and_absolute_links() -> Result<(), String> {
        let url =
            Url::parse("http://127.0.0.1:8000/docs/shipping.html").map_err(|e| e.to_string())?;
        let page = extract(HTML, &url, None, "UTF-8")?;
        assert_eq!(page.title, "Shipping policy");
        assert_eq!(page.description, "How we ship.");
        assert_eq!(
            page.text,
            "Shipping\nOrders ship in two days.\nCosts\nFree over 50 euro.\nelsewhere mail"
        );
        assert_eq!(
            page.headings,
            [
                Heading {
                    level: 1,
                    text: "Shipping".into()
                },
                Heading {
                    level: 2,
                    text: "Costs".into()
                }
            ]
        );
        assert_eq!(
            page.links,
            [
                "http://127.0.0.1:8000/",
                "http://127.0.0.1:8000/docs/faq.html",
                "https://other.example/x"
            ]
        );
        let costs = extract(HTML, &url, Some("main p"), "UTF-8")?;
        assert_eq!(costs.text, "Orders ship in two days.\nFree over 50 euro.");
        assert!(extract(HTML, &url, Some("p[["), "UTF-8").is_err());
        Ok(())
    }

    #[test]
    fn soft_line_breaks_heading_links_pre_language_and_canonical() -> Result<(), String> {
        let html = "<html lang=\"en\"><head><title>T</title>\
            <link rel=\"canonical\" href=\"/docs/intro.html\"></head><body><main>\
            <h2 id=\"setup\">Setting up<a class=\"headerlink\" href=\"#setup\">¶</a></h2>\
            <p>The server\nstarts when\r\nyou run it.</p>\
            <pre>fn main() {\n    run();\n}</pre></main></body></html>";
        let url =
            Url::parse("http://127.0.0.1:8000/docs/intro.html?x=1").map_err(|e| e.to_string())?;
        let page = extract(html, &url, None, "UTF-8")?;
        assert_eq!(
            page.text,
            "Setting up\nThe server starts when you run it.\nfn main() {\nrun();\n}"
        );
        assert_eq!(page.headings[0].text, "Setting up");
        assert_eq!(page.lang.as_deref(), Some("en"));
        assert_eq!(page.canonical, "http://127.0.0.1:8000/docs/intro.html");
        let bare = extract("<p>x</p>", &url, None, "UTF-8")?;
        assert_eq!((bare.lang, bare.canonical.as_str()), (None, url.as_str()));
        Ok(())
    }

    #[test]
    fn sections_follow_headings_with_their_anchors() -> Result<(), String> {
        let html = "<html><body><div role=\"main\"><p>Intro.</p>\
            <section id=\"basic-usage\"><h2>Basic usage<a class=\"headerlink\" \
            href=\"#basic-usage\">¶</a></h2><p>Call <a href=\"x.html\">dumps</a>.</p>\
            <h3 id=\"own\">Own id</h3><p>Text.</p><h3>Linked<a href=\"#lnk\">#</a></h3>\
            <p>More.</p></section></div></body></html>";
        let url = Url::parse("http://127.0.0.1:8000/json.html").map_err(|e| e.to_string())?;
        let page = extract(html, &url, None, "UTF-8")?;
        let parts: Vec<(Option<&str>, &str, &str)> = page
            .sections
            .iter()
            .map(|s| (s.anchor.as_deref(), s.title.as_str(), s.text.as_str()))
            .collect();
        assert_eq!(
            parts,
            [
                (None, "", "Intro."),
                (
                    Some("basic-usage"),
                    "Basic usage",
                    "Basic usage\nCall dumps."
                ),
                (Some("own"), "Own id", "Own id\nText."),
                (Some("lnk"), "Linked", "Linked\nMore."),
            ]
        );
        assert_eq!(
            page.text,
            "Intro.\nBasic usage\nCall dumps.\nOwn id\nText.\nLinked\nMore."
        );
        assert!(page.link_density > 0.0 && page.link_density < 0.3);
        assert!(!page.noindex);
        let index = extract(
            "<html><head><meta name=\"robots\" content=\"NOINDEX, follow\"></head>\
             <body><ul><li><a href=\"a\">Alpha module</a></li><li><a href=\"b\">Beta</a></li></ul></body></html>",
            &url,
            None,
            "UTF-8",
        )?;
        assert!(index.link_density > 0.99, "{}", index.link_density);
        assert!(index.noindex);
        Ok(())
    }

    #[test]
    fn decodes_by_header_meta_bom_or_guess() {
        // "café" in ISO-8859-1.
        let latin1 = b"<html><head><meta charset=\"iso-8859-1\"></head><body>caf\xe9</body></html>";
        let (text, charset) = decode(latin1, None);
        assert!(text.contains("café"));
        assert_eq!(charset, "windows-1252");
        let (text, charset) = decode(b"caf\xe9", Some("text/html; charset=ISO-8859-1"));
        assert_eq!((text.as_str(), charset.as_str()), ("café", "windows-1252"));
        let (text, charset) = decode("café".as_bytes(), Some("text/html"));
        assert_eq!((text.as_str(), charset.as_str()), ("café", "UTF-8"));
        let (text, _) = decode(b"caf\xe9 sans declaration", None);
        assert!(text.starts_with("café"));
        let (_, charset) = decode(b"\xEF\xBB\xBFhi", Some("text/html; charset=latin1"));
        assert_eq!(charset, "UTF-8");
    }
}
