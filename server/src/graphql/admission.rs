//! What a GraphQL document must satisfy before anything parses, validates or
//! runs it. Every check here is linear in the document's size and uses no
//! recursion deeper than the bounds it has already checked, so one request
//! can neither overflow the stack nor make validation explode.
//!
//! In order, each before the next does any work:
//! 1. **Size and shape, on the raw text** ([`scan`]): at most
//!    `limits.query_bytes` bytes, `limits.query_tokens` tokens, and brackets
//!    (`{`, `[`, `(`) nested at most `limits.query_nesting` deep. A single
//!    pass without recursion: a document a million levels deep is refused
//!    after reading `query_nesting + 1` of them. async-graphql's parser
//!    recurses once per level (a 4 KB list literal 1 750 levels deep used
//!    to overflow a worker's stack and abort the process), so nothing
//!    reaches it unbounded.
//! 2. **Parse**, once; the parsed document is kept in the request, so
//!    async-graphql does not parse it again.
//! 3. **Cost** ([`cost`]): every field counts 1, times what a list field
//!    multiplies its selection by (`first`/`last`, the default page, the
//!    buckets of `telemetry`, the inputs of `publishEvents`); fragments are
//!    counted where they are spread, as often as they are spread, but each
//!    is computed once (so a fragment "bomb" of four spreads per level is
//!    refused in microseconds, instead of costing seconds and gigabytes in
//!    validation). At most `limits.query_complexity`, and at most
//!    `limits.query_aliases` aliased fields.
//!
//! The same [`admit`] runs for every transport (HTTP POST and GET,
//! WebSocket `subscribe`), called by the transport before it looks into the
//! document, and again by the [`Admission`] schema extension for anything
//! that reaches the schema another way.
//!
//! (Over 600 lines with its tests: 450 of code, the rest the limit tests,
//! which belong beside the limits they hold.)

use std::{any::TypeId, collections::HashMap, sync::Arc};

use async_graphql_value::Value as InputValue;

use async_graphql::{
    Name, Pos, Request, ServerError, ServerResult, Value, Variables,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest},
    parser::types::{ExecutableDocument, Field, Selection, SelectionSet},
};
use chrono::{DateTime, Utc};

use crate::config::Limits;

/// Checks `request` against the limits and leaves it parsed; a refusal
/// carries `extensions.code` `BAD_USER_INPUT`. A request admitted once is
/// marked and not counted again.
pub fn admit(request: &mut Request, limits: &Limits) -> ServerResult<()> {
    if request.data.contains_key(&TypeId::of::<Admitted>()) {
        return Ok(());
    }
    let checked = scan(&request.query, limits).and_then(|()| {
        // Moved out and back rather than cloned: a publish carries its
        // events in the variables.
        let variables = std::mem::take(&mut request.variables);
        let counted = request
            .parsed_query()
            .and_then(|document| cost(document, &variables, limits));
        request.variables = variables;
        counted
    });
    if let Err(mut refused) = checked {
        super::error::add_code(&mut refused);
        return Err(refused);
    }
    request.data.insert(Admitted);
    Ok(())
}

/// Marks a request [`admit`] has let through, so the schema extension does
/// not count it again.
struct Admitted;

/// The schema extension that admits every request reaching the schema.
pub struct Admission(pub Arc<Limits>);

impl ExtensionFactory for Admission {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(AdmissionExtension(self.0.clone()))
    }
}

struct AdmissionExtension(Arc<Limits>);

#[async_graphql::async_trait::async_trait]
impl Extension for AdmissionExtension {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        admit(&mut request, &self.0)?;
        next.run(ctx, request).await
    }
}

fn refuse(message: String) -> ServerError {
    ServerError::new(message, None)
}

/// Step 1: size, tokens and bracket nesting of the raw document, following
/// GraphQL's lexical grammar closely enough that nothing the parser sees as
/// a bracket is hidden from it: strings, block strings and comments are
/// skipped as the parser skips them.
pub fn scan(query: &str, limits: &Limits) -> ServerResult<()> {
    let bytes = query.as_bytes();
    if bytes.len() > limits.query_bytes {
        return Err(refuse(format!(
            "the document is {} bytes; the limit is {}",
            bytes.len(),
            limits.query_bytes
        )));
    }
    let mut tokens: usize = 0;
    let mut depth: usize = 0;
    let mut at = 0;
    let too_many_tokens = || {
        refuse(format!(
            "the document has more than {} tokens, the limit",
            limits.query_tokens
        ))
    };
    while at < bytes.len() {
        let byte = bytes[at];
        match byte {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => at += 1,
            b'#' => {
                while at < bytes.len() && bytes[at] != b'\n' && bytes[at] != b'\r' {
                    at += 1;
                }
            }
            b'"' => {
                tokens += 1;
                at = skip_string(bytes, at);
            }
            b'{' | b'[' | b'(' => {
                tokens += 1;
                depth += 1;
                if depth > limits.query_nesting {
                    return Err(ServerError::new(
                        format!(
                            "the document nests brackets deeper than {} levels, the limit",
                            limits.query_nesting
                        ),
                        Some(position(bytes, at)),
                    ));
                }
                at += 1;
            }
            b'}' | b']' | b')' => {
                tokens += 1;
                depth = depth.saturating_sub(1);
                at += 1;
            }
            _ if is_word(byte) => {
                tokens += 1;
                while at < bytes.len() && is_word(bytes[at]) {
                    at += 1;
                }
            }
            // Punctuators (`!`, `$`, `:`, `=`, `@`, `|`, `&`) and anything
            // the parser will refuse.
            _ => {
                tokens += 1;
                at += 1;
            }
        }
        if tokens > limits.query_tokens {
            return Err(too_many_tokens());
        }
    }
    Ok(())
}

/// Arrays and objects a request's JSON (an HTTP body, a WebSocket message)
/// may nest around the values it carries: `{"variables": {"i": [{"payload":
/// …}]}}` is four.
pub const JSON_ENVELOPE_DEPTH: usize = 8;

/// Refuses JSON nested deeper than `max_depth` arrays and objects, in one
/// pass over the bytes, before serde_json builds any of it. Only nesting is
/// checked: whether it is valid JSON is serde_json's to say.
pub fn scan_json(bytes: &[u8], max_depth: usize) -> Result<(), String> {
    let mut depth: usize = 0;
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'"' => {
                at += 1;
                while at < bytes.len() && bytes[at] != b'"' {
                    at += if bytes[at] == b'\\' { 2 } else { 1 };
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(format!(
                        "the JSON nests arrays and objects deeper than {max_depth} levels, the limit"
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        at += 1;
    }
    Ok(())
}

/// Names, numbers, and `...` (counted as one token with what follows).
fn is_word(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-' | b'+') || byte >= 0x80
}

/// Skips a string or block string starting at `start` (a `"`); returns the
/// index after it (or the end of an unterminated one, which the parser
/// refuses).
fn skip_string(bytes: &[u8], start: usize) -> usize {
    if bytes[start..].starts_with(b"\"\"\"") {
        let mut at = start + 3;
        while at < bytes.len() {
            if bytes[at..].starts_with(b"\\\"\"\"") {
                at += 4;
            } else if bytes[at..].starts_with(b"\"\"\"") {
                return at + 3;
            } else {
                at += 1;
            }
        }
        return at;
    }
    let mut at = start + 1;
    while at < bytes.len() {
        match bytes[at] {
            b'\\' => at += 2,
            b'"' => return at + 1,
            // A string cannot span lines: the parser fails here.
            b'\n' | b'\r' => return at,
            _ => at += 1,
        }
    }
    at.min(bytes.len())
}

/// Line and column (from 1) of byte `at`.
fn position(bytes: &[u8], at: usize) -> Pos {
    let before = &bytes[..at];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let column = at
        - before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |n| n + 1)
        + 1;
    Pos { line, column }
}

/// Step 3: the document's cost and aliases, against the limits.
pub fn cost(
    document: &ExecutableDocument,
    variables: &Variables,
    limits: &Limits,
) -> ServerResult<()> {
    let mut counter = Counter {
        document,
        variables,
        limits,
        fragments: HashMap::new(),
        aliases: 0,
    };
    for (_, operation) in document.operations.iter() {
        // Defaults of the operation's variables stand in for missing ones.
        let mut defaults = HashMap::new();
        for definition in &operation.node.variable_definitions {
            if let Some(default) = &definition.node.default_value {
                defaults.insert(definition.node.name.node.clone(), default.node.clone());
            }
        }
        let total = counter.selection_set(&operation.node.selection_set.node, &defaults, 0)?;
        if total > limits.query_complexity as u64 {
            return Err(too_costly(total, limits));
        }
    }
    // Fragments never spread are still validated by async-graphql.
    for name in document.fragments.keys() {
        counter.fragment(name, &HashMap::new(), 0)?;
    }
    Ok(())
}

fn too_costly(total: u64, limits: &Limits) -> ServerError {
    refuse(format!(
        "the query would cost {total}, more than the limit of {}: each field counts 1, \
         multiplied by the page size (`first`/`last`) or the buckets of the lists around it; \
         ask for fewer fields, smaller pages, or split the query",
        limits.query_complexity
    ))
}

/// The state of one cost count.
struct Counter<'a> {
    document: &'a ExecutableDocument,
    variables: &'a Variables,
    limits: &'a Limits,
    /// Each fragment's cost once computed; `None` while it is being
    /// computed (seeing it again then is a cycle).
    fragments: HashMap<Name, Option<u64>>,
    aliases: usize,
}

/// Costs saturate here: far above any limit, and no overflow.
const SATURATED: u64 = u64::MAX / 4;

impl Counter<'_> {
    /// `depth` counts selection sets and fragment hops on the way here:
    /// the scan bounded the first, this bounds both.
    fn selection_set(
        &mut self,
        set: &SelectionSet,
        defaults: &HashMap<Name, Value>,
        depth: usize,
    ) -> ServerResult<u64> {
        if depth > self.limits.query_nesting {
            return Err(refuse(format!(
                "fragments nest deeper than {} levels, the limit",
                self.limits.query_nesting
            )));
        }
        let mut total: u64 = 0;
        for selection in &set.items {
            let cost = match &selection.node {
                Selection::Field(field) => {
                    if field.node.alias.is_some() {
                        self.aliases += 1;
                        if self.aliases > self.limits.query_aliases {
                            return Err(refuse(format!(
                                "the document has more than {} aliased fields, the limit",
                                self.limits.query_aliases
                            )));
                        }
                    }
                    let inner =
                        self.selection_set(&field.node.selection_set.node, defaults, depth + 1)?;
                    let times = self.multiplier(&field.node, defaults);
                    1u64.saturating_add(times.saturating_mul(inner))
                        .min(SATURATED)
                }
                Selection::InlineFragment(fragment) => {
                    self.selection_set(&fragment.node.selection_set.node, defaults, depth + 1)?
                }
                Selection::FragmentSpread(spread) => {
                    self.fragment(&spread.node.fragment_name.node, defaults, depth + 1)?
                }
            };
            total = total.saturating_add(cost).min(SATURATED);
            // Stop counting as soon as the answer is known.
            if total > self.limits.query_complexity as u64 {
                return Ok(total);
            }
        }
        Ok(total)
    }

    fn fragment(
        &mut self,
        name: &Name,
        defaults: &HashMap<Name, Value>,
        depth: usize,
    ) -> ServerResult<u64> {
        match self.fragments.get(name) {
            Some(Some(cost)) => return Ok(*cost),
            Some(None) => {
                return Err(refuse(format!("fragment `{}` spreads itself", shown(name))));
            }
            None => {}
        }
        // An unknown fragment costs nothing here; validation names it.
        let Some(definition) = self.document.fragments.get(name) else {
            return Ok(0);
        };
        self.fragments.insert(name.clone(), None);
        let cost = self.selection_set(&definition.node.selection_set.node, defaults, depth)?;
        self.fragments.insert(name.clone(), Some(cost));
        Ok(cost)
    }

    /// How many times a field's selection is repeated in the response.
    fn multiplier(&self, field: &Field, defaults: &HashMap<Name, Value>) -> u64 {
        let limits = self.limits;
        // Arguments are read in place (a variable's value is not copied:
        // `publishEvents(inputs: $i)` carries every event).
        let argument = |name: &str| -> Option<std::borrow::Cow<'_, Value>> {
            match &field.get_argument(name)?.node {
                InputValue::Variable(var) => self
                    .variables
                    .get(var)
                    .or_else(|| defaults.get(var))
                    .map(std::borrow::Cow::Borrowed),
                InputValue::List(items) => Some(std::borrow::Cow::Owned(Value::List(vec![
                        Value::Null;
                        items.len()
                    ]))),
                other => other.clone().into_const().map(std::borrow::Cow::Owned),
            }
        };
        let integer = |name: &str| match argument(name).as_deref() {
            Some(Value::Number(n)) => n.as_u64().or_else(|| n.as_i64().map(|_| 0)),
            _ => None,
        };
        if let Some(n) = integer("first").or_else(|| integer("last")) {
            return n.max(1);
        }
        match field.name.node.as_str() {
            "devices" | "events" | "commands" if !field.selection_set.node.items.is_empty() => {
                limits.default_page_size.max(1)
            }
            "statusHistory" => super::devices::STATUS_HISTORY_PAGE as u64,
            "publishEvents" => match argument("inputs").as_deref() {
                Some(Value::List(items)) => (items.len() as u64).max(1),
                _ => limits.batch_events as u64,
            },
            "telemetry" => {
                let time = |name: &str| match argument(name).as_deref() {
                    Some(Value::String(text)) => text.parse::<DateTime<Utc>>().ok(),
                    _ => None,
                };
                let buckets = match (time("from"), time("to"), integer("bucketSeconds")) {
                    (Some(from), Some(to), Some(seconds)) if seconds > 0 && to > from => {
                        ((to - from).num_seconds().max(0) as u64).div_ceil(seconds)
                    }
                    _ => limits.telemetry_buckets as u64,
                };
                buckets.clamp(1, limits.telemetry_buckets as u64)
            }
            _ => 1,
        }
    }
}

/// At most the first 64 characters of a client's name or id, for an error
/// message: an over-long one is not echoed whole.
pub fn shown(text: &str) -> String {
    const SHOWN: usize = 64;
    match text.char_indices().nth(SHOWN) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}…", &text[..end]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    fn admitted(query: &str) -> ServerResult<()> {
        admit(&mut Request::new(query), &limits())
    }

    #[test]
    fn a_million_levels_of_any_bracket_are_refused_before_parsing() {
        for (open, close) in [("[", "]"), ("{a:", "}"), ("(", ")")] {
            let query = format!(
                "{{ devices(filter: {{ids: {}1{}}}) {{ totalCount }} }}",
                open.repeat(1_000_000),
                close.repeat(1_000_000)
            );
            let mut limits = limits();
            limits.query_bytes = usize::MAX;
            limits.query_tokens = usize::MAX;
            let err = admit(&mut Request::new(query), &limits).unwrap_err();
            assert!(
                err.message.contains("nests brackets deeper"),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn brackets_inside_strings_and_comments_do_not_count() {
        let deep = "[".repeat(500);
        let query = format!(
            "# {deep}\n{{ devices(filter: {{externalIds: [\"{deep}\", \"\"\"{deep} \\\"\"\" {deep}\"\"\"]}}) {{ totalCount }} }}"
        );
        admitted(&query).unwrap();
    }

    #[test]
    fn a_string_cannot_hide_brackets_past_its_line() {
        // An unterminated string ends at the line: what follows is counted.
        let query = format!("{{ a(b: \"open\n{} }}", "[".repeat(200));
        assert!(
            admitted(&query)
                .unwrap_err()
                .message
                .contains("nests brackets")
        );
    }

    #[test]
    fn a_fragment_bomb_is_refused_by_its_expanded_cost() {
        // Each level spreads the next four times: 4^12 fields once expanded.
        let mut query = String::from("query { ...F0 }\n");
        for level in 0..12 {
            let next = level + 1;
            query.push_str(&format!(
                "fragment F{level} on Query {{ ...F{next} ...F{next} ...F{next} ...F{next} }}\n"
            ));
        }
        query.push_str("fragment F12 on Query { me { __typename } }\n");
        let started = std::time::Instant::now();
        let err = admitted(&query).unwrap_err();
        assert!(err.message.contains("would cost"), "{}", err.message);
        // Not a timing assert on a shared machine: a bound so loose that
        // only the exponential walk (seconds) could break it.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn a_fragment_spreading_itself_is_refused() {
        let err = admitted("{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }")
            .unwrap_err();
        assert!(err.message.contains("spreads itself"), "{}", err.message);
    }

    #[test]
    fn a_long_chain_of_fragments_is_refused_not_recursed() {
        let mut query = String::from("{ ...F0 }\n");
        for n in 0..5_000 {
            query.push_str(&format!("fragment F{n} on Query {{ ...F{} }}\n", n + 1));
        }
        let mut limits = limits();
        limits.query_bytes = usize::MAX;
        limits.query_tokens = usize::MAX;
        let err = admit(&mut Request::new(query), &limits).unwrap_err();
        assert!(
            err.message.contains("fragments nest deeper"),
            "{}",
            err.message
        );
    }

    #[test]
    fn page_sizes_multiply_and_aliases_are_counted() {
        let aliases: String = (0..60)
            .map(|n| format!("a{n}: devices(first: 500) {{ nodes {{ id }} }} "))
            .collect();
        let err = admitted(&format!("{{ {aliases} }}")).unwrap_err();
        assert!(err.message.contains("would cost"), "{}", err.message);

        let many: String = (0..=limits().query_aliases)
            .map(|n| format!("a{n}: me {{ __typename }} "))
            .collect();
        let err = admitted(&format!("{{ {many} }}")).unwrap_err();
        assert!(err.message.contains("aliased fields"), "{}", err.message);
    }

    #[test]
    fn a_page_size_from_a_variable_or_its_default_counts() {
        let query = "query($n: Int = 100000) { devices(first: $n) { nodes { id } } }";
        assert!(admitted(query).is_err());
        let mut request =
            Request::new(query).variables(Variables::from_json(serde_json::json!({"n": 10})));
        admit(&mut request, &limits()).unwrap();
    }

    #[test]
    fn ordinary_queries_pass() {
        admitted("{ events(first: 500) { totalCount nodes { id service payload receivedAt occurredAt device { id name } } pageInfo { hasNextPage endCursor } } }").unwrap();
        admitted("{ __schema { types { name fields { name args { name } } } } }").unwrap();
        admitted(
            "{ telemetry(deviceId: \"x\", service: \"t\", field: \"c\", from: \"2026-01-01T00:00:00Z\", to: \"2026-01-08T00:00:00Z\", bucketSeconds: 60) { start count avg } }",
        )
        .unwrap();
    }

    #[test]
    fn telemetry_costs_its_buckets() {
        let mut limits = limits();
        limits.query_complexity = 1000;
        let query = "{ telemetry(deviceId: \"x\", service: \"t\", field: \"c\", from: \"2026-01-01T00:00:00Z\", to: \"2026-01-02T00:00:00Z\", bucketSeconds: 60) { start count avg } }";
        assert!(admit(&mut Request::new(query), &limits).is_err());
    }

    #[test]
    fn a_status_history_costs_its_default_page_per_device() {
        let mut limits = limits();
        limits.query_complexity = 20_000;
        let each = "{ devices(first: 500) { nodes { statusHistory { status } } } }";
        assert!(admit(&mut Request::new(each), &limits).is_err());
        let few = "{ devices(first: 500) { nodes { statusHistory(first: 5) { status } } } }";
        admit(&mut Request::new(few), &limits).unwrap();
    }

    #[test]
    fn tokens_and_bytes_are_bounded() {
        let fields = "me { __typename } ".repeat(4_000);
        let err = admitted(&format!("{{ {fields} }}")).unwrap_err();
        assert!(err.message.contains("tokens"), "{}", err.message);
        let huge = format!(
            "{{ me {{ __typename }} }} #{}",
            "x".repeat(limits().query_bytes)
        );
        assert!(admitted(&huge).unwrap_err().message.contains("bytes"));
    }

    #[test]
    fn json_nesting_is_scanned_without_parsing() {
        let deep = format!("{}1{}", "[".repeat(1_000_000), "]".repeat(1_000_000));
        assert!(scan_json(deep.as_bytes(), 72).is_err());
        let in_string = format!("{{\"a\": \"{}\\\"{}\"}}", "[".repeat(100), "{".repeat(100));
        scan_json(in_string.as_bytes(), 2).unwrap();
        scan_json(br#"{"variables": {"i": [{"payload": {"a": [1]}}]}}"#, 6).unwrap();
        assert!(scan_json(br#"{"variables": {"i": [{"payload": {"a": [1]}}]}}"#, 5).is_err());
    }

    #[test]
    fn shown_keeps_a_short_prefix() {
        assert_eq!(shown("abc"), "abc");
        assert_eq!(shown(&"é".repeat(100)).chars().count(), 65);
    }
}
