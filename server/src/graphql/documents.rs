//! Parsed documents, kept by their text: a gateway sends the same
//! `publishEvent` mutation thousands of times a second, and parsing it
//! again each time was the largest single cost of a small operation (see
//! docs/PERFORMANCE.md, "Where each microsecond goes").
//!
//! Only documents that passed admission are kept, under their whole text,
//! so a hit is exactly what parsing that text gives; every request is still
//! scanned and counted against the limits (`admission`), only the parse is
//! skipped. The cache is small and bounded before anything is stored: at
//! most [`ENTRIES`] documents of at most [`TEXT_MAX`] bytes of text each,
//! least recently used out first. Larger documents are rare and parsed each
//! time.

use std::sync::{Arc, Mutex};

use async_graphql::{Request, parser::types::ExecutableDocument};
use hashlink::LruCache;

/// Documents kept at most.
pub const ENTRIES: usize = 128;
/// Longest text kept: ordinary operations are a few hundred bytes.
pub const TEXT_MAX: usize = 2048;

/// Parsed documents by text.
pub struct Documents {
    cache: Mutex<LruCache<Arc<str>, ExecutableDocument>>,
}

impl Default for Documents {
    fn default() -> Self {
        Documents {
            cache: Mutex::new(LruCache::new(ENTRIES)),
        }
    }
}

impl Documents {
    /// Gives `request` its parsed document when the text is known.
    /// Returns whether it did.
    pub fn prime(&self, request: &mut Request) -> bool {
        if request.query.len() > TEXT_MAX {
            return false;
        }
        let found = self.lock().get(request.query.as_str()).cloned();
        match found {
            Some(document) => {
                request.set_parsed_query(document);
                true
            }
            None => false,
        }
    }

    /// Keeps the parsed document of an admitted request.
    pub fn keep(&self, request: &mut Request) {
        if request.query.len() > TEXT_MAX {
            return;
        }
        let Ok(document) = request.parsed_query() else {
            return;
        };
        let document = document.clone();
        self.lock()
            .insert(Arc::from(request.query.as_str()), document);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<Arc<str>, ExecutableDocument>> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_text_gets_its_document_and_the_cache_stays_bounded() {
        let documents = Documents::default();
        let text = "mutation($i: EventInput!) { publishEvent(input: $i) { id } }";
        let mut first = Request::new(text);
        assert!(!documents.prime(&mut first));
        documents.keep(&mut first);
        let mut second = Request::new(text);
        assert!(documents.prime(&mut second));
        let parsed = async_graphql::parser::parse_query(text).unwrap();
        assert_eq!(
            format!("{:?}", second.parsed_query().unwrap()),
            format!("{parsed:?}"),
            "a hit is what parsing gives"
        );

        // A long text is neither kept nor looked up.
        let long = format!("{{ a {} }}", " ".repeat(TEXT_MAX));
        let mut request = Request::new(long.as_str());
        documents.keep(&mut request);
        assert!(!documents.prime(&mut Request::new(long.as_str())));

        // Ten times as many texts as entries: the cache holds ENTRIES.
        for n in 0..ENTRIES * 10 {
            documents.keep(&mut Request::new(format!("{{ f{n} }}")));
        }
        assert_eq!(documents.len(), ENTRIES);
        assert!(documents.prime(&mut Request::new(format!("{{ f{} }}", ENTRIES * 10 - 1))));
        assert!(
            !documents.prime(&mut Request::new(text)),
            "the oldest went first"
        );
        // A text that does not parse is not kept.
        documents.keep(&mut Request::new("{ unclosed"));
        assert!(!documents.prime(&mut Request::new("{ unclosed")));
    }
}
