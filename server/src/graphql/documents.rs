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
//!
//! A publishing mutation that async-graphql has run once without a request
//! error is also kept compiled beside its document (`live::publish`): a
//! request with that text and operation name is then given the compiled
//! publish instead of a copy of the document, and is not counted again
//! (its cost is that of its text: a compiled publish has no argument a
//! variable could multiply).

use std::sync::{Arc, Mutex};

use async_graphql::{Request, parser::types::ExecutableDocument};
use hashlink::LruCache;

use super::live::Publish;

/// Documents kept at most.
pub const ENTRIES: usize = 128;
/// Longest text kept: ordinary operations are a few hundred bytes.
pub const TEXT_MAX: usize = 2048;

/// Parsed documents by text.
pub struct Documents {
    cache: Mutex<LruCache<Arc<str>, Entry>>,
}

struct Entry {
    document: ExecutableDocument,
    /// Set once async-graphql has run this text as a publish.
    publish: Option<Arc<Publish>>,
}

/// What [`Documents::prime`] found for a request.
pub enum Primed {
    /// A text not kept: the request parses it.
    Unknown,
    /// The request was given its parsed document.
    Parsed,
    /// A trusted publishing mutation: the request was left as it is.
    Publish(Arc<Publish>),
}

impl Default for Documents {
    fn default() -> Self {
        Documents {
            cache: Mutex::new(LruCache::new(ENTRIES)),
        }
    }
}

impl Documents {
    /// Gives `request` its parsed document when the text is known, or
    /// says it is a trusted publish.
    pub fn prime(&self, request: &mut Request) -> Primed {
        if request.query.len() > TEXT_MAX {
            return Primed::Unknown;
        }
        let document = {
            let mut cache = self.lock();
            let Some(entry) = cache.get(request.query.as_str()) else {
                return Primed::Unknown;
            };
            if let Some(publish) = &entry.publish
                && publish.operation_name == request.operation_name
            {
                return Primed::Publish(publish.clone());
            }
            entry.document.clone()
        };
        request.set_parsed_query(document);
        Primed::Parsed
    }

    /// Trusts `publish` for `text` from now on (the text is kept; when it
    /// was evicted meanwhile, nothing happens).
    pub fn trust(&self, text: &str, publish: Arc<Publish>) {
        if let Some(entry) = self.lock().get_mut(text) {
            entry.publish = Some(publish);
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
        let entry = Entry {
            document: document.clone(),
            publish: None,
        };
        self.lock().insert(Arc::from(request.query.as_str()), entry);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<Arc<str>, Entry>> {
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
        assert!(matches!(documents.prime(&mut first), Primed::Unknown));
        documents.keep(&mut first);
        let mut second = Request::new(text);
        assert!(matches!(documents.prime(&mut second), Primed::Parsed));
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
        assert!(matches!(
            documents.prime(&mut Request::new(long.as_str())),
            Primed::Unknown
        ));

        // Ten times as many texts as entries: the cache holds ENTRIES.
        for n in 0..ENTRIES * 10 {
            documents.keep(&mut Request::new(format!("{{ f{n} }}")));
        }
        assert_eq!(documents.len(), ENTRIES);
        let newest = format!("{{ f{} }}", ENTRIES * 10 - 1);
        assert!(matches!(
            documents.prime(&mut Request::new(newest)),
            Primed::Parsed
        ));
        assert!(
            matches!(documents.prime(&mut Request::new(text)), Primed::Unknown),
            "the oldest went first"
        );
        // A text that does not parse is not kept.
        documents.keep(&mut Request::new("{ unclosed"));
        assert!(matches!(
            documents.prime(&mut Request::new("{ unclosed")),
            Primed::Unknown
        ));
    }

    #[test]
    fn a_trusted_publish_is_given_for_its_text_and_operation_name_only() {
        let documents = Documents::default();
        let text = "mutation P($i: EventInput!) { publishEvent(input: $i) { id } } \
                    query Q { me { id } }";
        let publish = |name: &str| {
            let document = async_graphql::parser::parse_query(text).unwrap();
            Arc::new(Publish::compile(&document, Some(name)).expect("compiles"))
        };
        // Trusting a text that is not kept does nothing.
        documents.trust(text, publish("P"));
        assert!(matches!(
            documents.prime(&mut Request::new(text)),
            Primed::Unknown
        ));
        documents.keep(&mut Request::new(text));
        documents.trust(text, publish("P"));
        let named = |name: &str| Request::new(text).operation_name(name);
        assert!(matches!(
            documents.prime(&mut named("P")),
            Primed::Publish(p) if p.operation_name.as_deref() == Some("P")
        ));
        // The same text run as its other operation is parsed as before.
        let mut other = named("Q");
        assert!(matches!(documents.prime(&mut other), Primed::Parsed));
        assert!(other.parsed_query().is_ok());
    }
}
