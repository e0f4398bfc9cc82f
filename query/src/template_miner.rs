//! Log templates: lines grouped by shape, so thousands of lines read as a
//! handful of templates with counts.
//!
//! Two steps, after Drain (He et al., ICWS 2017): each token's variable
//! parts are masked first (a number in any notation — `00:01`, `1.13`,
//! `10.0.0.1` — or a hex id such as a UUID is one `<*>`; elsewhere any
//! alphanumeric run holding a digit becomes `<*>`, so `uid=0` reads
//! `uid=<*>`; a number with its unit, `<1 sec`, is one token, and a bracketed
//! restatement of a value, `(1.13 KB)`, is dropped, so lines that print it
//! and lines that don't have the same shape); then a line joins the most similar template of
//! its group with the same token count and the same first two constant
//! tokens, if at least [`SIMILARITY`] of the positions agree — positions
//! that disagree become `<*>` in the template. JSON objects are one token:
//! their sorted keys with constant values kept and the rest masked.

use std::collections::HashMap;

use serde_json::Value;

const VAR: &str = "<*>";

/// Share of token positions that must agree for a line to join a template.
/// Measured on the Loghub 2k samples (grouping accuracy by `EventId`):
/// 0.6 → 0.889, 0.7 → 0.915, 0.8 → 0.890 on average over 16 systems.
pub const SIMILARITY: f64 = 0.7;

/// Templates compared per line at most, so a group with very many
/// templates (every line unique) costs bounded time per line.
const MAX_CANDIDATES: usize = 256;

/// Tokens longer than this that hold a digit are ids or blobs: one `<*>`.
const LONG_TOKEN: usize = 40;

/// Brackets and quotes that may wrap a token, kept around its mask.
const OPENERS: &[char] = &['(', '[', '{', '<', '"', '\''];
const CLOSERS: &[char] = &[')', ']', '}', '>', '"', '\'', ',', ';', ':', '.'];

/// A token whose value is one variable as a whole: a number in any notation
/// (`00:01`, `1.13`, `<1`, `10.0.0.1:80`, `-5`) — digits and punctuation, no
/// letters — or hex groups joined by `-`/`:`/`.` (UUIDs, MAC and IPv6
/// addresses), whose letter-only groups (`bdcc`) are as variable as the rest.
fn is_whole_value(core: &str) -> bool {
    if !core.bytes().any(|b| b.is_ascii_digit()) {
        return false;
    }
    if !core.chars().any(char::is_alphabetic) {
        return true;
    }
    let mut groups = 0;
    core.split(['-', ':', '.']).all(|g| {
        groups += 1;
        !g.is_empty() && g.bytes().all(|b| b.is_ascii_hexdigit())
    }) && groups >= 3
}

/// `core` of a token: the token without its wrapping brackets, quotes and
/// trailing punctuation, with what was stripped on each side.
fn split_wrapping(token: &str) -> (&str, &str, &str) {
    let body = token.trim_start_matches(OPENERS);
    let core = body.trim_end_matches(CLOSERS);
    let lead = &token[..token.len() - body.len()];
    let trail = &body[core.len()..];
    (lead, core, trail)
}

/// Source-file extensions of a `file:line` code location.
const SOURCE_EXTENSIONS: &[&str] = &[
    "java", "kt", "scala", "go", "py", "rs", "c", "h", "cc", "cpp", "hpp", "cs", "js", "ts", "rb",
    "php", "swift", "ex", "erl",
];

/// Whether a token's core is the code location a logger prints (logback's
/// `t.s.TravelServiceImpl#457`, a `ib_sm_sweep.c:1831` or Go's
/// `main.go:42`): a class (dotted or CamelCase) with `#line`, or a source
/// file with `:line`. The line number names the log statement, so it is
/// kept, and two statements that print the same text are two events — a
/// line that stops while its twin goes on is how a swallowed exception
/// shows.
fn is_code_location(core: &str) -> bool {
    // Most tokens do not end in a digit: the cheap test first.
    if !core.as_bytes().last().is_some_and(u8::is_ascii_digit) {
        return false;
    }
    let line_of = |sep: char| {
        core.rsplit_once(sep)
            .filter(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .map(|(name, _)| name)
    };
    let identifier = |name: &str| {
        !name.is_empty()
            && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '$'))
    };
    if let Some(class) = line_of('#') {
        let mixed_case = class.chars().any(|c| c.is_ascii_uppercase())
            && class.chars().any(|c| c.is_ascii_lowercase());
        return identifier(class) && (mixed_case || class.contains('.'));
    }
    line_of(':')
        .and_then(|file| file.rsplit_once('.'))
        .is_some_and(|(stem, ext)| {
            identifier(stem) && SOURCE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str())
        })
}

/// The masked form of one token.
fn mask_token(token: &str) -> String {
    let (lead, core, trail) = split_wrapping(token);
    if is_code_location(core) {
        return token.to_string();
    }
    if is_whole_value(core) {
        // A comparison sign (`<1`) is part of the value.
        let lead = lead.trim_end_matches(['<', '>']);
        return format!("{lead}{VAR}{trail}");
    }
    if token.len() > LONG_TOKEN && token.bytes().any(|b| b.is_ascii_digit()) {
        return long_token(token);
    }
    let mut out = String::with_capacity(token.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.is_empty() {
            return;
        }
        if run.bytes().any(|b| b.is_ascii_digit()) {
            if !out.ends_with(VAR) {
                out.push_str(VAR);
            }
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in token.chars() {
        if c.is_alphanumeric() || c == '_' {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    merge_numbers(&out)
}

/// Inside a token, a signed or decimal number (`Translation=-24.0`) is one
/// `<*>` like an unsigned integer (`Translation=0`), not `-<*>.<*>`.
fn merge_numbers(masked: &str) -> String {
    const DECIMAL: &str = "<*>.<*>";
    const SIGNED: &str = "-<*>";
    if !masked.contains(DECIMAL) && !masked.contains(SIGNED) {
        return masked.to_string();
    }
    let mut out = masked.to_string();
    while out.contains(DECIMAL) {
        out = out.replace(DECIMAL, VAR);
    }
    let mut from = 0;
    while let Some(at) = out[from..].find(SIGNED).map(|i| i + from) {
        let sign_starts_number = out[..at]
            .chars()
            .next_back()
            .is_none_or(|c| matches!(c, '=' | ':' | '(' | '[' | ',' | ' '));
        if sign_starts_number {
            out.remove(at);
        }
        from = at + 1;
    }
    out
}

/// A long token holding a digit is an id or a blob, but its leading name
/// (`setTotalSteps=…`, `reloadSteps1514…|3786`) says which: that name is
/// kept, the rest is one `<*>`.
fn long_token(token: &str) -> String {
    let name_len = token
        .find(|c: char| !(c.is_alphabetic() || c == '_'))
        .unwrap_or(token.len());
    if name_len < 3 {
        return VAR.to_string();
    }
    let sep = token[name_len..]
        .chars()
        .next()
        .filter(|c| matches!(c, '=' | ':'))
        .map(|c| c.len_utf8())
        .unwrap_or(0);
    format!("{}{VAR}", &token[..name_len + sep])
}

/// Units of durations and sizes: a number followed by one of them is one
/// quantity, so `<1 sec` and `00:01` (or `1.2 KB` and `1200`) take the
/// same number of tokens.
const UNITS: &[&str] = &[
    "ns", "us", "µs", "ms", "s", "sec", "secs", "second", "seconds", "min", "mins", "minutes", "h",
    "hr", "hrs", "hours", "b", "kb", "mb", "gb", "tb", "kib", "mib", "gib", "tib",
];

fn is_unit(token: &str) -> bool {
    let (lead, core, _) = split_wrapping(token);
    lead.is_empty() && UNITS.iter().any(|u| u.eq_ignore_ascii_case(core))
}

/// A bracketed token that is only a variable (`(<*>)`, `[<*>]`): a value
/// restated in passing — `1165 bytes (1.13 KB)` — that some lines of an
/// event print and others omit; dropped so both read alike.
fn is_bracketed_value(token: &str) -> bool {
    let token = token.trim_end_matches([',', ';']);
    [("(", ")"), ("[", "]")].iter().any(|(open, close)| {
        token
            .strip_prefix(open)
            .and_then(|t| t.strip_suffix(close))
            .and_then(|t| t.strip_prefix(VAR))
            .is_some_and(|unit| unit.is_empty() || is_unit(unit.trim_start()))
    })
}

/// The tokens of a line with their variable parts masked.
fn tokens(line: &str) -> Vec<String> {
    let trimmed = line.trim();
    if trimmed.starts_with('{')
        && let Ok(Value::Object(map)) = serde_json::from_str::<Value>(trimmed)
    {
        let mut keys: Vec<(&String, &Value)> = map.iter().collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        let parts: Vec<String> = keys
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s)
                    if !s.bytes().any(|b| b.is_ascii_digit()) && s.len() <= LONG_TOKEN =>
                {
                    format!("{k}={s}")
                }
                Value::Bool(b) => format!("{k}={b}"),
                _ => format!("{k}={VAR}"),
            })
            .collect();
        return vec![format!("{{{}}}", parts.join(" "))];
    }
    let raw: Vec<&str> = trimmed.split_whitespace().collect();
    let mut masked = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let (_, core, _) = split_wrapping(raw[i]);
        match raw.get(i + 1) {
            Some(next) if is_whole_value(core) && is_unit(next) => {
                let number = mask_token(raw[i]);
                masked.push(format!("{number} {next}"));
                i += 2;
            }
            _ => {
                masked.push(mask_token(raw[i]));
                i += 1;
            }
        }
    }
    if !masked.iter().all(|t| is_bracketed_value(t)) {
        masked.retain(|t| !is_bracketed_value(t));
    }
    collapse_lists(masked)
}

/// Longest list element, in tokens, that [`collapse_lists`] recognises.
const MAX_ELEMENT: usize = 6;

/// A comma-separated list printed into a line (`[a, b, c]`, a `toString`
/// of many records) makes the same event a different token count, hence a
/// different template, for every length. Consecutive repeats of one
/// masked element ending in a comma are kept once, so a list of three and
/// a list of twenty read alike (a list of one still differs).
fn collapse_lists(mut toks: Vec<String>) -> Vec<String> {
    for len in 1..=MAX_ELEMENT {
        let mut i = 0;
        while i + 2 * len <= toks.len() {
            let repeated =
                toks[i + len - 1].ends_with(',') && toks[i..i + len] == toks[i + len..i + 2 * len];
            if repeated {
                toks.drain(i + len..i + 2 * len);
            } else {
                i += 1;
            }
        }
    }
    toks
}

/// The template of a single line on its own (variable parts masked), for
/// grouping where no other lines are at hand (exception messages).
pub fn template(line: &str) -> String {
    tokens(line).join(" ")
}

/// A line's tokens with their variable parts masked, ready for
/// [`TemplateMiner::add_tokens`]. Masking depends on the line alone, so
/// the lines of one window can be masked (on another thread, while other
/// lines are still being read) before they are grouped in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens(Vec<String>);

impl Tokens {
    pub fn of(line: &str) -> Self {
        Tokens(tokens(line))
    }
}

/// Where a line may find its template: its group, its token count, its
/// first two tokens (`<*>` for any with a variable part) and its code
/// location if it prints one (see [`is_code_location`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BucketKey {
    group: String,
    len: usize,
    prefix: [String; 2],
    location: Option<String>,
}

#[derive(Debug)]
struct Cluster {
    tokens: Vec<String>,
}

/// Groups lines into templates incrementally; see the module docs.
#[derive(Debug, Default)]
pub struct TemplateMiner {
    clusters: Vec<Cluster>,
    buckets: HashMap<BucketKey, Vec<usize>>,
}

impl TemplateMiner {
    /// Adds `line` of `group` (lines of different groups never share a
    /// template — e.g. a service and severity) and returns its template id.
    pub fn add(&mut self, group: &str, line: &str) -> usize {
        self.add_tokens(group, Tokens::of(line))
    }

    /// [`Self::add`] of a line already masked with [`Tokens::of`]: the
    /// masking, most of the work, needs no miner and can run elsewhere.
    pub fn add_tokens(&mut self, group: &str, Tokens(toks): Tokens) -> usize {
        let prefix_token = |i: usize| match toks.get(i) {
            Some(t) if !t.contains(VAR) => t.clone(),
            Some(_) => VAR.to_string(),
            None => String::new(),
        };
        let key = BucketKey {
            group: group.to_string(),
            len: toks.len(),
            prefix: [prefix_token(0), prefix_token(1)],
            location: (toks.iter())
                .find(|t| is_code_location(split_wrapping(t).1))
                .cloned(),
        };
        let bucket = self.buckets.entry(key).or_default();
        let mut best: Option<(usize, f64, usize)> = None;
        for &id in bucket.iter().rev().take(MAX_CANDIDATES) {
            let (similarity, vars) = similarity(&self.clusters[id].tokens, &toks);
            let better = match best {
                None => true,
                Some((_, s, v)) => similarity > s || (similarity == s && vars > v),
            };
            if better {
                best = Some((id, similarity, vars));
            }
        }
        match best {
            Some((id, s, _)) if s >= SIMILARITY => {
                for (t, new) in self.clusters[id].tokens.iter_mut().zip(&toks) {
                    if t != new && t != VAR {
                        *t = VAR.to_string();
                    }
                }
                id
            }
            _ => {
                let id = self.clusters.len();
                self.clusters.push(Cluster { tokens: toks });
                bucket.push(id);
                id
            }
        }
    }

    /// The template of `id` as it stands now (it generalises as lines join).
    pub fn template(&self, id: usize) -> String {
        self.clusters
            .get(id)
            .map(|c| c.tokens.join(" "))
            .unwrap_or_default()
    }

    /// How many templates there are.
    pub fn len(&self) -> usize {
        self.clusters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty()
    }
}

/// Share of positions where the template and the line agree (a `<*>` in
/// both counts as agreeing), and the template's number of `<*>` positions.
fn similarity(template: &[String], line: &[String]) -> (f64, usize) {
    if template.is_empty() {
        return (1.0, 0);
    }
    let mut same = 0;
    let mut vars = 0;
    for (t, l) in template.iter().zip(line) {
        if t == VAR {
            vars += 1;
        }
        if t == l {
            same += 1;
        }
    }
    (same as f64 / template.len() as f64, vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_variable_parts_of_tokens() {
        assert_eq!(
            template("charged 12.50 USD to card ending 4242 in 31ms"),
            "charged <*> USD to card ending <*> in <*>"
        );
        assert_eq!(
            template("session opened for user news by (uid=0)"),
            "session opened for user news by (uid=<*>)"
        );
        assert_eq!(template("rhost=10.0.0.1:80"), "rhost=<*>:<*>");
        assert_eq!(
            template(
                r#"{"duration_ms":9.8,"event":"http_request","route":"/cart","status":200,"user_id":"u-8675"}"#
            ),
            "{duration_ms=<*> event=http_request route=/cart status=<*> user_id=<*>}"
        );
    }

    #[test]
    fn numbers_and_hex_ids_are_masked_whole() {
        assert_eq!(template("lifetime 01:07:37"), "lifetime <*>");
        assert_eq!(template("at 10.0.0.1, rate -0.5"), "at <*>, rate <*>");
        // A UUID's letter-only groups (`bdcc`) are as variable as the rest.
        assert_eq!(
            template("[instance: d96a117b-0193-4549-bdcc-63b917273d1d] destroyed"),
            template("[instance: b9000564-fe1a-409b-b8cc-1e88b294cd1d] destroyed")
        );
        assert_eq!(template("mac 00:1a:2b:3c:4d:5e up"), "mac <*> up");
        // Words are not hex ids, even with hex letters only.
        assert_eq!(template("cafe-bead-face"), "cafe-bead-face");
    }

    #[test]
    fn signed_and_decimal_numbers_inside_a_token_are_one_variable() {
        assert_eq!(template("Translation=-24.0"), "Translation=<*>");
        assert_eq!(template("Translation=0"), "Translation=<*>");
        assert_eq!(template("index:-1,"), "index:<*>,");
        // A dash between a name and a number is not a sign.
        assert_eq!(template("node-160:eth0"), "node-<*>:<*>");
    }

    #[test]
    fn a_quantity_is_one_token_and_its_restatement_is_dropped() {
        assert_eq!(template("lifetime <1 sec"), "lifetime <*> sec");
        assert_eq!(
            template("1165 bytes (1.13 KB) sent, lifetime 00:01"),
            "<*> bytes sent, lifetime <*>"
        );
        let mut miner = TemplateMiner::default();
        let a = miner.add(
            "",
            "peer closed, 12 bytes sent, 800 bytes received, lifetime 00:02",
        );
        let b = miner.add(
            "",
            "peer closed, 1190 bytes (1.16 KB) sent, 1671 bytes (1.63 KB) received, lifetime <1 sec",
        );
        assert_eq!(a, b);
        assert_eq!(
            miner.template(a),
            "peer closed, <*> bytes sent, <*> bytes received, lifetime <*>"
        );
        // A line that is only a bracketed value keeps it.
        assert_eq!(template("(42)"), "(<*>)");
        // A bracketed word is not a value: kept.
        assert_eq!(
            template("BIOS-e820: 0 - 9 (usable)"),
            "BIOS-<*>: <*> - <*> (usable)"
        );
    }

    #[test]
    fn a_long_blob_keeps_its_leading_name() {
        assert_eq!(
            template("setTodayTotalDetailSteps=1514038440000##7007##548365##8661##12361##27173954"),
            "setTodayTotalDetailSteps=<*>"
        );
        assert_eq!(
            template("tryToReloadTodayBasicSteps1514044800223|3786|0|0|0|0|0|0|0|0|0"),
            "tryToReloadTodayBasicSteps<*>"
        );
        assert_eq!(template(&format!("9{}", "ab".repeat(30))), "<*>");
    }

    #[test]
    fn a_printed_list_of_any_length_is_one_template() {
        let line = |n: usize| {
            let items: Vec<String> = (0..n)
                .map(|i| format!("Ticket(seatNo={i}, from=shanghai),"))
                .collect();
            format!(
                "sold tickets: [{} Ticket(seatNo=99, from=suzhou)]",
                items.join(" ")
            )
        };
        assert_eq!(template(&line(2)), template(&line(20)));
        assert_eq!(
            template(&line(3)),
            "sold tickets: [Ticket(seatNo=<*>, from=shanghai), Ticket(seatNo=<*>, from=suzhou)]"
        );
        // The first element carries the bracket: from three on, alike.
        assert_eq!(template("ids [1, 2, 3, 4, 5]"), template("ids [7, 8, 9]"));
        assert_ne!(template("ids [1, 2, 3, 4]"), template("ids [7]"));
        assert_eq!(template("a, a, b"), "a, b", "only repeats collapse");
    }

    #[test]
    fn lines_differing_in_a_word_share_a_template() {
        let mut miner = TemplateMiner::default();
        let a = miner.add("auth", "session closed for user cyrus");
        let b = miner.add("auth", "session closed for user news");
        let c = miner.add("auth", "session closed for user test");
        assert_eq!((a, b), (a, c));
        assert_eq!(miner.template(a), "session closed for user <*>");
        // Another group, another template; another shape, another template.
        assert_ne!(miner.add("other", "session closed for user cyrus"), a);
        assert_ne!(miner.add("auth", "connection from 10.0.0.1 refused"), a);
        assert_eq!(miner.len(), 3);
    }

    /// Lesson 4 of problem location: two log statements that print the
    /// same text from different lines of code are two events — when one
    /// stops and its twin goes on (an exception swallowed between them),
    /// the change must show.
    #[test]
    fn a_code_location_names_the_event() {
        let mut miner = TemplateMiner::default();
        let at = |line: u32, t: u32| {
            format!(
                "18:04:18.094 INFO  t.s.TravelServiceImpl#{line} [getTickets][Calculate distance][calculate time: {t}]"
            )
        };
        let a = miner.add("travel", &at(451, 0));
        let b = miner.add("travel", &at(457, 16));
        assert_ne!(a, b);
        assert_eq!(miner.add("travel", &at(451, 7)), a);
        assert!(miner.template(b).contains("TravelServiceImpl#457"));
        assert_eq!(
            template("[ib_sm_sweep.c:1831]: NEW SWEEP"),
            "[ib_sm_sweep.c:1831]: NEW SWEEP"
        );
        assert_eq!(template("main.go:42: started"), "main.go:42: started");
        // Numbered things that are not code are still masked.
        assert_eq!(
            template("CPU#0 up, order#12 paid"),
            "CPU#<*> up, order#<*> paid"
        );
        assert_eq!(template("host.example:8080"), "host.example:<*>");
    }

    #[test]
    fn lines_differing_in_most_positions_do_not() {
        let mut miner = TemplateMiner::default();
        let a = miner.add("", "GET /a from alpha ok");
        let b = miner.add("", "GET /a to beta failed");
        let c = miner.add("", "GET /a from alpha failed");
        assert_ne!(a, b);
        assert_eq!(a, c, "4 of 5 positions agree");
        assert_eq!(miner.template(a), "GET /a from alpha <*>");
    }
}
