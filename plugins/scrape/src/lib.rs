//! Bundled handler `scrape`:
//! `{url, brand?, collection?, selector?, depth?, max_pages?, ingest?, render?}`.
//!
//! Fetches `url` (honouring robots.txt for the `wasmhive` agent), decodes its
//! charset, extracts title, description, headings, main text and absolute
//! links (`page.rs`), and follows same-site links breadth-first up to
//! `depth` (default 0: the page alone) and `max_pages` (default 20, at most
//! [`MAX_PAGES`]). With `ingest` (the default when `brand` is set) the
//! pages go, [`PAGES_PER_CHILD`] to a task, to `embed` child tasks that
//! chunk them by section and store them in the brand's collection
//! (`collection` overrides it; without either, the site's host); the
//! scrape waits for its children while its budget lasts and reports what
//! was stored. Before that, what the crawl learned of the site (`site.rs`:
//! the title suffix and the lines every page repeats) is taken out, and
//! pages that are not content are left out and reported: index pages
//! (mostly links: a table of contents, a generated index), pages that ask
//! `noindex`, and duplicates (the same canonical URL, or the same text). `render: true` fetches pages through the rendering
//! endpoint configured as `render_url` (a headless-browser service taking
//! `?url=`), whose host the operator binds to the `browser` breaker.
//!
//! Page text in the result is capped at [`TEXT_IN_RESULT`] characters (the
//! embed children get it whole).

pub mod page;
pub mod robots;
pub mod site;

use robots::Robots;
use serde::Deserialize;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};
use url::Url;
use wasmhive_sdk::http::{self, HttpError, Request};
use wasmhive_sdk::{Context, Error, Handler, Info, Priority};

struct Scrape;

/// The product token robots.txt rules are matched against.
pub const AGENT: &str = "wasmhive";
/// Characters of each page's text kept in the task result.
pub const TEXT_IN_RESULT: usize = 20_000;
/// Most pages one task may crawl.
pub const MAX_PAGES: u32 = 1000;
/// Pages per `embed` child (fewer when their text passes [`TEXT_PER_CHILD`]).
pub const PAGES_PER_CHILD: usize = 20;
/// Bytes of page text per `embed` child, about.
pub const TEXT_PER_CHILD: usize = 512 * 1024;
/// A page whose main text is at least this share link text is an index.
pub const INDEX_DENSITY: f32 = 0.6;
/// Time kept back from the task's budget to report.
const MARGIN: Duration = Duration::from_millis(500);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    pub url: String,
    pub brand: Option<String>,
    pub collection: Option<String>,
    pub selector: Option<String>,
    pub depth: Option<u32>,
    pub max_pages: Option<u32>,
    pub ingest: Option<bool>,
    #[serde(default)]
    pub render: bool,
}

/// Whether `link` is on the same site as `start`: same host, and the same
/// port (an explicit one, or both on their scheme's default).
pub fn same_site(start: &Url, link: &Url) -> bool {
    start.host_str() == link.host_str()
        && (start.port() == link.port()
            || start.port_or_known_default() == link.port_or_known_default())
}

struct Crawl {
    deadline: Instant,
    user_agent: String,
    render: Option<String>,
    /// Per origin: its rules, or why robots.txt could not be read.
    robots: HashMap<String, Result<Robots, HttpError>>,
}

impl Crawl {
    /// The robots.txt rules of `url`'s origin. A 4xx means no rules; a 5xx
    /// or a network failure means nothing may be fetched yet (RFC 9309
    /// §2.3.1.4), which is reported as a transient error; a refusal by the
    /// host is the refusal.
    fn robots_for(&mut self, url: &Url) -> Result<&Robots, HttpError> {
        let origin = url.origin().ascii_serialization();
        let agent = self.user_agent.clone();
        self.robots
            .entry(origin.clone())
            .or_insert_with(|| {
                let request = Request::get(&format!("{origin}/robots.txt"))
                    .header("user-agent", &agent)
                    .timeout(Duration::from_secs(10));
                match http::get_with(request) {
                    Ok(r) if r.is_success() => Ok(Robots::parse(&r.text_lossy(), AGENT)),
                    Ok(r) if (400..500).contains(&r.status) => Ok(Robots::allow_all()),
                    Ok(r) => Err(HttpError::Other(format!(
                        "robots.txt answered {}: nothing is fetched until it is readable",
                        r.status
                    ))),
                    Err(e) => Err(e),
                }
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    fn fetch(&self, url: &Url) -> Result<http::Response, HttpError> {
        let target = match &self.render {
            Some(endpoint) => {
                let mut r = Url::parse(endpoint)
                    .map_err(|e| HttpError::BadUrl(format!("render_url `{endpoint}`: {e}")))?;
                r.query_pairs_mut().append_pair("url", url.as_str());
                r.to_string()
            }
            None => url.to_string(),
        };
        let left = self.deadline.saturating_duration_since(Instant::now());
        http::get_with(
            Request::get(&target)
                .header("user-agent", &self.user_agent)
                .header("accept", "text/html,application/xhtml+xml")
                .timeout(left),
        )
    }
}

fn http_failure(url: &Url, e: &HttpError) -> Error {
    let message = format!("{url}: {e}");
    if e.is_transient() {
        Error::Retryable(message)
    } else {
        Error::Fatal(message)
    }
}

impl Handler for Scrape {
    type Input = Payload;
    type Output = serde_json::Value;
    const INFO: Info = Info {
        name: "scrape",
        version: "1.0.0",
        kinds: &["scrape"],
        category: "scraping",
        description: "fetches and extracts pages, follows same-site links, ingests the text",
    };

    fn handle(ctx: &Context, payload: Payload) -> Result<serde_json::Value, Error> {
        let start = Url::parse(payload.url.trim())
            .map_err(|e| Error::Fatal(format!("invalid url `{}`: {e}", payload.url)))?;
        if !matches!(start.scheme(), "http" | "https") {
            return Err(Error::Fatal(format!(
                "{start}: only http and https pages can be scraped"
            )));
        }
        let render = if payload.render {
            Some(wasmhive_sdk::config("render_url").ok_or_else(|| {
                Error::Fatal(
                    "render: true needs a rendering endpoint: set render_url in scrape.toml [config] \
                     and allow its host under [capabilities] http"
                        .into(),
                )
            })?)
        } else {
            None
        };
        let max_depth = payload.depth.unwrap_or(0).min(10);
        let max_pages = payload.max_pages.unwrap_or(20).clamp(1, MAX_PAGES) as usize;
        let mut crawl = Crawl {
            deadline: ctx.deadline() - MARGIN,
            user_agent: wasmhive_sdk::config("user_agent")
                .unwrap_or_else(|| format!("{AGENT}-scrape/1.0")),
            render,
            robots: HashMap::new(),
        };

        let brand = payload.brand.clone();
        let mut ingest = payload.ingest.unwrap_or(brand.is_some()).then(|| {
            let collection = payload.collection.clone().unwrap_or_else(|| {
                wasmhive_sdk::brand_collection(
                    brand.as_deref().or(start.host_str()).unwrap_or("default"),
                )
            });
            Ingest::new(collection, brand.as_deref())
        });
        let mut queue = VecDeque::from([(start.clone(), 0u32)]);
        let mut seen: HashSet<String> = HashSet::from([start.to_string()]);
        let mut pages: Vec<(page::Page, u16)> = Vec::new();
        let mut skipped = Vec::new();
        let mut errors = Vec::new();
        while let Some((url, depth)) = queue.pop_front() {
            if pages.len() >= max_pages || Instant::now() >= crawl.deadline {
                break;
            }
            let path = match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_string(),
            };
            if crawl.render.is_none() {
                let allowed = match crawl.robots_for(&url) {
                    Ok(robots) => robots.allowed(&path),
                    Err(e) if url == start => return Err(http_failure(&url, &e)),
                    Err(e) => {
                        errors.push(
                            serde_json::json!({ "url": url.as_str(), "error": e.to_string() }),
                        );
                        continue;
                    }
                };
                if !allowed {
                    if url == start {
                        return Err(Error::Fatal(format!("{url}: disallowed by robots.txt")));
                    }
                    skipped
                        .push(serde_json::json!({ "url": url.as_str(), "reason": "robots.txt" }));
                    continue;
                }
            }
            let response = match crawl.fetch(&url) {
                Ok(r) => r,
                Err(e) if url == start => return Err(http_failure(&url, &e)),
                Err(e) => {
                    errors.push(serde_json::json!({ "url": url.as_str(), "error": e.to_string() }));
                    continue;
                }
            };
            if !response.is_success() {
                let error = format!("HTTP {}", response.status);
                if url == start {
                    return Err(if response.status >= 500 || response.status == 429 {
                        Error::Retryable(format!("{url}: {error}"))
                    } else {
                        Error::Fatal(format!("{url}: {error}"))
                    });
                }
                errors.push(serde_json::json!({ "url": url.as_str(), "error": error }));
                continue;
            }
            let content_type = response.header("content-type").map(str::to_string);
            let is_html = content_type.as_deref().is_none_or(|c| {
                let c = c.to_ascii_lowercase();
                c.contains("html") || c.contains("xml")
            });
            if !is_html {
                let error = format!("not HTML ({})", content_type.unwrap_or_default());
                if url == start {
                    return Err(Error::Fatal(format!("{url}: {error}")));
                }
                errors.push(serde_json::json!({ "url": url.as_str(), "error": error }));
                continue;
            }
            let (html, charset) = page::decode(&response.body, content_type.as_deref());
            let final_url = Url::parse(&response.url).unwrap_or_else(|_| url.clone());
            let page = page::extract(&html, &final_url, payload.selector.as_deref(), &charset)
                .map_err(Error::Fatal)?;
            if depth < max_depth {
                for link in &page.links {
                    if let Ok(link) = Url::parse(link)
                        && same_site(&start, &link)
                        && seen.insert(link.to_string())
                    {
                        queue.push_back((link, depth + 1));
                    }
                }
            }
            if let Some(ingest) = &mut ingest {
                ingest.add(&page)?;
            }
            pages.push((page, response.status));
            let done = pages.len();
            wasmhive_sdk::progress(
                (done * 80 / max_pages.max(1)).min(80) as u8,
                &format!("{done} page(s) fetched"),
            );
        }

        let mut result = serde_json::json!({
            "url": start.as_str(),
            "pages": pages.iter().map(|(p, status)| page_json(p, *status)).collect::<Vec<_>>(),
            "skipped": skipped,
            "errors": errors,
        });
        if let Some(ingest) = ingest {
            result["ingest"] = ingest.finish(crawl.deadline)?;
        }
        wasmhive_sdk::progress(100, "done");
        Ok(result)
    }
}

fn page_json(p: &page::Page, status: u16) -> serde_json::Value {
    let text: String = p.text.chars().take(TEXT_IN_RESULT).collect();
    serde_json::json!({
        "url": p.url,
        "status": status,
        "title": p.title,
        "description": p.description,
        "headings": p.headings,
        "text": text,
        "text_truncated": p.text.chars().count() > TEXT_IN_RESULT,
        "links": p.links,
        "charset": p.charset,
    })
}

/// Why a fetched page is not ingested, if it is not.
pub fn left_out(
    page: &page::Page,
    canonicals: &mut HashSet<String>,
    digests: &mut HashSet<u64>,
    text: &str,
) -> Option<&'static str> {
    use std::hash::{Hash, Hasher};
    if page.noindex {
        return Some("noindex");
    }
    if page.link_density >= INDEX_DENSITY {
        return Some("index page (mostly links)");
    }
    if !text.chars().any(char::is_alphanumeric) {
        return Some("no text");
    }
    if !canonicals.insert(page.canonical.clone()) {
        return Some("duplicate (same canonical URL)");
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    if !digests.insert(h.finish()) {
        return Some("duplicate (same text)");
    }
    None
}

/// The document `embed` stores for `page`: cited by its canonical URL
/// (when that is on the same site), cut in sections, chrome removed.
pub fn document(p: &page::Page, chrome: &site::Chrome, brand: Option<&str>) -> serde_json::Value {
    let url = match (Url::parse(&p.canonical), Url::parse(&p.url)) {
        (Ok(c), Ok(u)) if same_site(&u, &c) => p.canonical.clone(),
        _ => p.url.clone(),
    };
    let title = chrome.title(&p.title);
    let sections: Vec<serde_json::Value> = p
        .sections
        .iter()
        .map(|s| {
            serde_json::json!({ "anchor": s.anchor, "title": s.title, "text": chrome.text(&s.text) })
        })
        .filter(|s| s["text"].as_str().is_some_and(|t| !t.is_empty()))
        .collect();
    let text = [p.description.clone(), chrome.text(&p.text)]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n");
    let mut metadata = serde_json::json!({ "url": url, "title": title, "brand": brand });
    if let Some(lang) = &p.lang {
        metadata["lang"] = lang.clone().into();
    }
    serde_json::json!({ "id": url, "text": text, "sections": sections, "metadata": metadata })
}

/// Pages on their way to `embed` children, sent while the crawl goes on
/// (the embedding runs beside the fetching). The site's chrome is learned
/// from the first [`LEARN_FROM`] pages (all of them in a smaller crawl);
/// pages fetched until then wait.
struct Ingest<'a> {
    collection: String,
    brand: Option<&'a str>,
    chrome: Option<site::Chrome>,
    waiting: Vec<page::Page>,
    canonicals: HashSet<String>,
    digests: HashSet<u64>,
    left: Vec<serde_json::Value>,
    batch: Vec<serde_json::Value>,
    bytes: usize,
    documents: usize,
    submitted: usize,
}

/// Pages the site's chrome is learned from.
pub const LEARN_FROM: usize = 20;

impl<'a> Ingest<'a> {
    fn new(collection: String, brand: Option<&'a str>) -> Self {
        Ingest {
            collection,
            brand,
            chrome: None,
            waiting: Vec::new(),
            canonicals: HashSet::new(),
            digests: HashSet::new(),
            left: Vec::new(),
            batch: Vec::new(),
            bytes: 0,
            documents: 0,
            submitted: 0,
        }
    }

    fn add(&mut self, p: &page::Page) -> Result<(), Error> {
        if self.chrome.is_some() {
            return self.take(p);
        }
        self.waiting.push(p.clone());
        if self.waiting.len() >= LEARN_FROM {
            self.learn()?;
        }
        Ok(())
    }

    fn learn(&mut self) -> Result<(), Error> {
        let waiting = std::mem::take(&mut self.waiting);
        let refs: Vec<&page::Page> = waiting.iter().collect();
        self.chrome = Some(site::Chrome::learn(&refs));
        for p in &waiting {
            self.take(p)?;
        }
        Ok(())
    }

    fn take(&mut self, p: &page::Page) -> Result<(), Error> {
        let chrome = self.chrome.clone().unwrap_or_default();
        let text = chrome.text(&p.text);
        if let Some(reason) = left_out(p, &mut self.canonicals, &mut self.digests, &text) {
            self.left
                .push(serde_json::json!({ "url": p.url, "reason": reason }));
            return Ok(());
        }
        let document = document(p, &chrome, self.brand);
        let size = document["text"].as_str().map_or(0, str::len);
        if !self.batch.is_empty()
            && (self.batch.len() >= PAGES_PER_CHILD || self.bytes + size > TEXT_PER_CHILD)
        {
            self.send()?;
        }
        self.bytes += size;
        self.documents += 1;
        self.batch.push(document);
        Ok(())
    }

    fn send(&mut self) -> Result<(), Error> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.bytes = 0;
        let child = serde_json::json!({ "documents": batch, "collection": self.collection });
        wasmhive_sdk::submit("embed", &child, Priority::Normal)
            .map_err(|e| Error::Fatal(format!("could not submit the embed child: {e}")))?;
        self.submitted += 1;
        Ok(())
    }

    /// Sends what is left and waits for the children while the budget
    /// lasts; reports what was stored and what was left out.
    fn finish(mut self, deadline: Instant) -> Result<serde_json::Value, Error> {
        if self.chrome.is_none() {
            self.learn()?;
        }
        self.send()?;
        let (collection, documents, left, submitted) =
            (self.collection, self.documents, self.left, self.submitted);
        let children = wasmhive_sdk::wait_for_children(deadline, |finished, total| {
            wasmhive_sdk::progress(
                (80 + finished * 20 / total.max(1)) as u8,
                &format!("{finished}/{total} batch(es) of pages stored"),
            );
        });
        let count = |s: &str| children.iter().filter(|c| c.status == s).count();
        let failures: Vec<serde_json::Value> = children
            .iter()
            .filter_map(|c| {
                c.error
                    .as_ref()
                    .map(|e| serde_json::json!({ "task_id": c.id, "error": e }))
            })
            .collect();
        let finished = children
            .iter()
            .filter(|c| wasmhive_sdk::is_finished(c))
            .count();
        Ok(serde_json::json!({
            "collection": collection,
            "documents": documents,
            "left_out": left,
            "children": submitted,
            "succeeded": count("succeeded"),
            "failed": count("failed"),
            "pending": children.len() - finished,
            "chunks": children
                .iter()
                .filter_map(|c| c.result.as_deref())
                .filter_map(|r| serde_json::from_str::<serde_json::Value>(r).ok())
                .filter_map(|r| r["chunks"].as_u64())
                .sum::<u64>(),
            "failures": failures,
        }))
    }
}

wasmhive_sdk::handler!(Scrape);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_site_is_same_host_and_port() -> Result<(), url::ParseError> {
        let start = Url::parse("http://127.0.0.1:8000/")?;
        assert!(same_site(&start, &Url::parse("http://127.0.0.1:8000/a")?));
        assert!(!same_site(&start, &Url::parse("http://127.0.0.1:9000/a")?));
        assert!(!same_site(&start, &Url::parse("http://localhost:8000/a")?));
        Ok(())
    }
}
