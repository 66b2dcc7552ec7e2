//! What a crawl learns of its site from the pages it fetched: the title
//! affix every page carries (`… — Python 3.11 documentation`) and the
//! lines repeated across pages (a menu, a banner, a licence line that the
//! tag names did not give away). Both are chrome, not content: they are
//! taken out before the pages are ingested, so they neither start every
//! passage nor make every page look alike to the search.
//!
//! A crawl of fewer than [`MIN_PAGES`] pages learns nothing (one page
//! cannot tell chrome from content).

use crate::page::Page;
use std::collections::{HashMap, HashSet};

/// Pages a crawl needs before anything counts as site-wide.
pub const MIN_PAGES: usize = 4;
/// The share of a crawl's pages a line or affix must be on to be chrome.
pub const SHARE: f32 = 0.5;
/// Separators between a page's own title and the site's name.
const SEPARATORS: &[&str] = &[" — ", " – ", " | ", " - ", " · ", " :: ", " » "];

/// The chrome a crawl found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Chrome {
    /// Title endings shared by the site's pages, separator included.
    pub title_suffix: Option<String>,
    /// Title beginnings shared by the site's pages, separator included.
    pub title_prefix: Option<String>,
    /// Lines of main text on at least [`SHARE`] of the pages.
    pub lines: HashSet<String>,
}

impl Chrome {
    /// Learns the chrome of `pages` (one site).
    pub fn learn(pages: &[&Page]) -> Chrome {
        if pages.len() < MIN_PAGES {
            return Chrome::default();
        }
        let needed = ((pages.len() as f32 * SHARE).ceil() as usize).max(3);
        let mut suffixes: HashMap<&str, usize> = HashMap::new();
        let mut prefixes: HashMap<&str, usize> = HashMap::new();
        let mut lines: HashMap<&str, usize> = HashMap::new();
        for page in pages {
            let t = page.title.as_str();
            // Each separator counts once per title, at its last (suffix)
            // and first (prefix) occurrence.
            for sep in SEPARATORS {
                if let Some(at) = t.rfind(sep) {
                    *suffixes.entry(&t[at..]).or_default() += 1;
                }
                if let Some(at) = t.find(sep) {
                    *prefixes.entry(&t[..at + sep.len()]).or_default() += 1;
                }
            }
            let mut seen: HashSet<&str> = HashSet::new();
            for line in page.text.lines() {
                if seen.insert(line) {
                    *lines.entry(line).or_default() += 1;
                }
            }
        }
        let most = |counts: HashMap<&str, usize>| {
            counts
                .into_iter()
                .filter(|(_, n)| *n >= needed)
                .max_by(|a, b| a.1.cmp(&b.1).then(a.0.len().cmp(&b.0.len())))
                .map(|(s, _)| s.to_string())
        };
        Chrome {
            title_suffix: most(suffixes),
            title_prefix: most(prefixes),
            lines: lines
                .into_iter()
                .filter(|(_, n)| *n >= needed)
                .map(|(l, _)| l.to_string())
                .collect(),
        }
    }

    /// `title` without the site's affixes (unchanged if nothing is left).
    pub fn title(&self, title: &str) -> String {
        let mut t = title;
        if let Some(s) = &self.title_suffix {
            t = t.strip_suffix(s.as_str()).unwrap_or(t);
        }
        if let Some(p) = &self.title_prefix {
            t = t.strip_prefix(p.as_str()).unwrap_or(t);
        }
        let t = t.trim();
        if t.is_empty() {
            title.to_string()
        } else {
            t.to_string()
        }
    }

    /// `text` without its site-wide lines.
    pub fn text(&self, text: &str) -> String {
        if self.lines.is_empty() {
            return text.to_string();
        }
        text.lines()
            .filter(|l| !self.lines.contains(*l))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(title: &str, text: &str) -> Page {
        Page {
            url: String::new(),
            title: title.into(),
            description: String::new(),
            headings: Vec::new(),
            text: text.into(),
            links: Vec::new(),
            charset: "UTF-8".into(),
            lang: None,
            canonical: String::new(),
            sections: Vec::new(),
            link_density: 0.0,
            noindex: false,
        }
    }

    #[test]
    fn a_shared_title_suffix_and_repeated_lines_are_chrome() {
        let pages = [
            page(
                "json — JSON encoder — Python 3.11 documentation",
                "Menu\njson text\n© PSF",
            ),
            page(
                "csv — CSV files — Python 3.11 documentation",
                "Menu\ncsv text\n© PSF",
            ),
            page(
                "re — Regular expressions — Python 3.11 documentation",
                "Menu\nre text",
            ),
            page(
                "Glossary — Python 3.11 documentation",
                "glossary text\n© PSF",
            ),
            page("Odd one", "Menu\nodd text"),
        ];
        let refs: Vec<&Page> = pages.iter().collect();
        let chrome = Chrome::learn(&refs);
        assert_eq!(
            chrome.title_suffix.as_deref(),
            Some(" — Python 3.11 documentation")
        );
        assert_eq!(chrome.title(&pages[0].title), "json — JSON encoder");
        assert_eq!(chrome.title("Odd one"), "Odd one");
        assert_eq!(chrome.text(&pages[0].text), "json text");
        assert_eq!(chrome.text(&pages[3].text), "glossary text");
        let few = Chrome::learn(&refs[..3]);
        assert_eq!(few, Chrome::default(), "three pages teach nothing");
    }
}
