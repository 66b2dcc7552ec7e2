//! Recorded HTTP exchanges, for the test harness (`wasmhive test`): a
//! recording answers a plugin's requests with no network, and `--record`
//! makes one from real responses of allowed hosts.
//!
//! A recording is a JSON file: `[{method, url, status, headers, body}]`,
//! the body as text (or `body_bytes`, a list of byte values, when it is
//! not UTF-8). Requests match by method and URL; repeated requests to the
//! same URL get the recorded exchanges in order, then the last one again.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One request and its response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    pub method: String,
    pub url: String,
    pub status: u16,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_bytes: Option<Vec<u8>>,
}

impl Exchange {
    pub fn new(
        method: &str,
        url: &str,
        status: u16,
        headers: Vec<(String, String)>,
        body: &[u8],
    ) -> Exchange {
        let (body, body_bytes) = match std::str::from_utf8(body) {
            Ok(text) => (text.to_string(), None),
            Err(_) => (String::new(), Some(body.to_vec())),
        };
        Exchange {
            method: method.to_ascii_uppercase(),
            url: url.to_string(),
            status,
            headers,
            body,
            body_bytes,
        }
    }

    pub fn body(&self) -> Bytes {
        match &self.body_bytes {
            Some(b) => Bytes::from(b.clone()),
            None => Bytes::from(self.body.clone()),
        }
    }
}

/// The exchanges of one test case.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Recording {
    pub exchanges: Vec<Exchange>,
    /// How many times each (method, url) was answered, to serve repeats in order.
    #[serde(skip)]
    served: HashMap<(String, String), usize>,
}

impl Recording {
    pub fn new(exchanges: Vec<Exchange>) -> Recording {
        Recording {
            exchanges,
            served: HashMap::new(),
        }
    }

    /// The recorded answer to `method url`, if there is one.
    pub fn answer(&mut self, method: &str, url: &str) -> Option<Exchange> {
        let method = method.to_ascii_uppercase();
        let matching: Vec<&Exchange> = self
            .exchanges
            .iter()
            .filter(|e| e.method == method && e.url == url)
            .collect();
        let last = matching.len().checked_sub(1)?;
        let n = self.served.entry((method, url.to_string())).or_default();
        let exchange = matching[(*n).min(last)].clone();
        *n += 1;
        Some(exchange)
    }

    pub fn push(&mut self, exchange: Exchange) {
        self.exchanges.push(exchange);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_served_in_order_then_the_last_again() {
        let mut r = Recording::new(vec![
            Exchange::new("GET", "http://a/x", 503, vec![], b"busy"),
            Exchange::new("GET", "http://a/x", 200, vec![], b"ok"),
        ]);
        let statuses: Vec<u16> = (0..3)
            .filter_map(|_| r.answer("get", "http://a/x").map(|e| e.status))
            .collect();
        assert_eq!(statuses, [503, 200, 200]);
        assert!(r.answer("GET", "http://a/other").is_none());
    }

    #[test]
    fn binary_bodies_round_trip_through_json() -> Result<(), serde_json::Error> {
        let e = Exchange::new("GET", "http://a/b", 200, vec![], &[0xff, 0x00, 0xe9]);
        let back: Vec<Exchange> = serde_json::from_str(&serde_json::to_string(&vec![e.clone()])?)?;
        assert_eq!(back[0].body(), Bytes::from_static(&[0xff, 0x00, 0xe9]));
        Ok(())
    }
}
