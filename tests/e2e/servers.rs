//! Servers the handler tests talk to, started in the test process on
//! 127.0.0.1:0: a small website and a failing OpenAI-compatible endpoint.

use anyhow::Result;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Requests a server received, by path.
#[derive(Debug, Default, Clone)]
pub struct Hits(Arc<Mutex<BTreeMap<String, u32>>>);

impl Hits {
    fn count(&self, path: &str) {
        if let Ok(mut h) = self.0.lock() {
            *h.entry(path.to_string()).or_default() += 1;
        }
    }

    pub fn of(&self, path: &str) -> u32 {
        self.0
            .lock()
            .map(|h| h.get(path).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

async fn serve(router: Router) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(addr)
}

/// The test website: an index linking to four pages (one in ISO-8859-1),
/// a page robots.txt disallows, and a redirect to a host off the allowlist
/// (`localhost`, while the scrape manifest allows `127.0.0.1:<port>`).
pub struct Site {
    pub addr: SocketAddr,
    pub hits: Hits,
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title>\
         <meta name=\"description\" content=\"{title} at Acme\"></head><body>\
         <nav><a href=\"/\">Home</a> <a href=\"/shipping.html\">Shipping</a> \
         <a href=\"/returns.html\">Returns</a> <a href=\"/about.html\">About</a></nav>\
         <main><h1>{title}</h1>{body}</main><footer>Acme footer: all rights reserved</footer>\
         </body></html>"
    )
}

async fn site(State(hits): State<Hits>, uri: Uri) -> Response {
    let path = uri.path().to_string();
    hits.count(&path);
    let html =
        |s: String| ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], s).into_response();
    match path.as_str() {
        "/robots.txt" => "User-agent: *\nDisallow: /private/\n".into_response(),
        "/" => html(page(
            "Acme bicycles",
            "<p>Welcome to Acme, makers of city bicycles.</p>\
             <p><a href=\"/latin1.html\">Our café</a> <a href=\"/private/secret.html\">Staff</a> \
             <a href=\"/away\">Partners</a></p>",
        )),
        "/shipping.html" => html(page(
            "Shipping and delivery",
            "<p>Orders are shipped from our warehouse within two business days.</p>\
             <p>Delivery by courier takes three to five working days across Europe. \
             Express delivery arrives the next day for an extra fee.</p>",
        )),
        "/returns.html" => html(page(
            "Returns and refunds",
            "<p>You may return any product within thirty days of purchase.</p>\
             <p>Refunds are paid to the original payment method within a week after we \
             receive the returned item.</p>",
        )),
        "/about.html" => html(page(
            "About Acme",
            "<p>Acme was founded in 2011 in Lisbon, Portugal.</p>\
             <p>Our headquarters and design studio are still in Lisbon, where forty people \
             build our bicycles.</p>",
        )),
        "/latin1.html" => {
            // ISO-8859-1 bytes: é is 0xE9, â 0xE2, û 0xFB.
            let mut body = Vec::new();
            body.extend_from_slice(
                b"<html><head><title>Caf\xe9 Acme menu</title></head><body><main>\
                  <h1>Caf\xe9 Acme</h1><p>The caf\xe9 at our store serves espresso and \
                  past\xe9is de nata.</p><p>Desserts include cr\xe8me br\xfbl\xe9e and \
                  chocolate mousse.</p></main></body></html>",
            );
            (
                [(header::CONTENT_TYPE, "text/html; charset=ISO-8859-1")],
                body,
            )
                .into_response()
        }
        // Long on the first fetch, one short section after.
        "/changing.html" if hits.of("/changing.html") <= 1 => {
            let words = |topic: &str| format!("<p>{}</p>", topic.repeat(40));
            html(page(
                "Workshop",
                &format!(
                    "<section id=\"hours\"><h2>Opening hours</h2>{}</section>\
                     <section id=\"repairs\"><h2>Repairs<a class=\"headerlink\" href=\"#repairs\">¶</a></h2>\
                     <p>We fix flat tyres, replace inner tubes and patch punctures while you wait.</p>{}</section>\
                     <section id=\"rentals\"><h2>Rentals</h2>{}</section>",
                    words("The shop opens at nine on weekdays and at ten on saturdays. "),
                    words("Wheel truing and brake adjustment take an hour. "),
                    words("City bikes can be rented by the day or by the week. "),
                ),
            ))
        }
        "/changing.html" => html(page(
            "Workshop",
            "<p>The workshop is closed for the winter; flat tyre repairs resume in spring.</p>",
        )),
        "/private/secret.html" => html(page("Secret", "<p>Internal pricing.</p>")),
        // 2 MiB of HTML, over a 1 MiB response cap.
        "/big.html" => html(page("Big", &"<p>filler text</p>".repeat(2 << 16))),
        // A stand-in for a headless-browser rendering service.
        "/render" => {
            let target = uri
                .query()
                .and_then(|q| q.strip_prefix("url="))
                .unwrap_or_default()
                .to_string();
            html(page(
                "Rendered",
                &format!("<p>Rendered by the browser service: {target}</p>"),
            ))
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

impl Site {
    pub async fn start() -> Result<Site> {
        let hits = Hits::default();
        let port_cell: Arc<Mutex<u16>> = Arc::default();
        let cell = port_cell.clone();
        let router = Router::new()
            .route(
                "/away",
                get(move |State(hits): State<Hits>| {
                    let cell = cell.clone();
                    async move {
                        hits.count("/away");
                        let port = cell.lock().map(|p| *p).unwrap_or(0);
                        (
                            StatusCode::FOUND,
                            [(header::LOCATION, format!("http://localhost:{port}/"))],
                        )
                            .into_response()
                    }
                }),
            )
            .fallback(site)
            .with_state(hits.clone());
        let addr = serve(router).await?;
        if let Ok(mut p) = port_cell.lock() {
            *p = addr.port();
        }
        Ok(Site { addr, hits })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// An OpenAI-compatible embeddings endpoint with a 4-dimension "model":
/// one dimension per topic word it finds (shipping, returns, warranty),
/// plus a constant, so texts on the same topic point the same way.
pub struct FakeEmbeddings {
    pub addr: SocketAddr,
    pub hits: Hits,
}

fn fake_embedding(text: &str) -> Vec<f32> {
    let t = text.to_lowercase();
    let has = |w: &str| if t.contains(w) { 1.0 } else { 0.0 };
    vec![has("ship"), has("return"), has("warrant"), 0.1]
}

impl FakeEmbeddings {
    pub async fn start() -> Result<FakeEmbeddings> {
        let hits = Hits::default();
        let router =
            Router::new()
                .route(
                    "/v1/embeddings",
                    post(
                        |State(hits): State<Hits>,
                         axum::Json(body): axum::Json<serde_json::Value>| async move {
                            hits.count("/v1/embeddings");
                            let data: Vec<serde_json::Value> = body["input"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .enumerate()
                                .map(|(i, t)| {
                                    serde_json::json!({
                                        "index": i,
                                        "embedding": fake_embedding(t.as_str().unwrap_or_default()),
                                    })
                                })
                                .collect();
                            axum::Json(serde_json::json!({ "data": data, "model": body["model"] }))
                        },
                    ),
                )
                .with_state(hits.clone());
        let addr = serve(router).await?;
        Ok(FakeEmbeddings { addr, hits })
    }
}

/// An OpenAI-compatible endpoint whose every call answers 500.
pub struct FailingOpenAi {
    pub addr: SocketAddr,
    pub hits: Hits,
}

impl FailingOpenAi {
    pub async fn start() -> Result<FailingOpenAi> {
        let hits = Hits::default();
        let router = Router::new()
            .route(
                "/v1/chat/completions",
                post(|State(hits): State<Hits>| async move {
                    hits.count("/v1/chat/completions");
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "upstream model overloaded",
                    )
                }),
            )
            .with_state(hits.clone());
        let addr = serve(router).await?;
        Ok(FailingOpenAi { addr, hits })
    }
}
