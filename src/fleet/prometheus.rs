//! A minimal client of the Prometheus HTTP API's instant query
//! (`POST /api/v1/query`, form-encoded `query` and `time`), as Prometheus,
//! Thanos, Mimir and VictoriaMetrics answer it, and the PromQL the
//! controller asks.
//!
//! Invariant: an answer is used only when it is a complete, successful
//! instant vector of finite numbers; anything else — no connection, a
//! timeout, an HTTP error, `"status": "error"`, another result type, a
//! body past [`MAX_ANSWER`] — is an error naming the URL, never read as
//! "no hosts". Every request ends by its deadline. A redirect is not
//! followed: a POST turned into a GET loses its query, and re-sending the
//! query elsewhere is the operator's choice to make in `--prometheus`
//! ([`PromError::Redirect`] names both addresses). Every query but the
//! store's clock ([`Client::store_time`]) is evaluated at the instant it
//! names, and an answer evaluated at another instant is refused. Label
//! values from the command line and the manifest are written into PromQL
//! only as escaped string literals ([`quote`]), and label names are checked
//! by Prometheus's rules.

use crate::report::{valid_label_name, Outcome, RESERVED_LABELS};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::time::Duration;

/// The largest answer read: the controller's queries aggregate, so a real
/// answer is a few hundred bytes.
pub const MAX_ANSWER: u64 = 4 << 20;

/// Why a query has no usable answer; each names the URL asked.
#[derive(Debug)]
pub enum PromError {
    /// `--prometheus` is not an http(s) URL of an API root.
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No connection, a timeout, a cut answer.
    Unreachable {
        /// The URL asked.
        url: String,
        /// The transport's error.
        detail: String,
    },
    /// An HTTP status without the API's error document.
    Http {
        /// The URL asked.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The body's first line (quoted, at most 200 bytes), for the message.
        detail: String,
    },
    /// The API said `"status": "error"`.
    Api {
        /// The URL asked.
        url: String,
        /// The API's `errorType` (`bad_data`, `timeout`, …).
        error_type: String,
        /// The API's `error` message.
        error: String,
    },
    /// A redirect (3xx), not followed.
    Redirect {
        /// The URL asked.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// Its `Location` (quoted), or `(none)`.
        location: String,
    },
    /// An answer that is not a usable instant vector.
    Answer {
        /// The URL asked.
        url: String,
        /// What is wrong with the answer.
        reason: String,
    },
}

impl fmt::Display for PromError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = match self {
            // Not a URL (white space, a quote): its user info hidden all
            // the same, which the general rule would stop short of.
            PromError::Url { url, reason } => {
                format!("--prometheus {}: {reason}", crate::fetch::redact_url(url))
            }
            PromError::Unreachable { url, detail } => {
                format!("{url}: Prometheus unreachable: {detail}")
            }
            PromError::Http {
                url,
                status,
                detail,
            } => format!("{url}: HTTP {status}: {detail}"),
            PromError::Api {
                url,
                error_type,
                error,
            } => format!("{url}: query refused ({error_type}): {error}"),
            PromError::Redirect {
                url,
                status,
                location,
            } => format!(
                "{url}: HTTP {status} redirect to {location}, not followed (a query is not \
                 sent on to another address, nor turned into a GET without it): {}",
                match location.strip_suffix(QUERY_PATH) {
                    Some(root) if !root.is_empty() => format!("use --prometheus {root}"),
                    _ => "give --prometheus the query API's own root".into(),
                }
            ),
            PromError::Answer { url, reason } => format!("{url}: {reason}"),
        };
        f.write_str(&crate::fetch::redact(&line))
    }
}

impl std::error::Error for PromError {}

/// One element of an instant vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The series' labels (`__name__` included when the answer has it).
    pub labels: BTreeMap<String, String>,
    /// The sample's value.
    pub value: f64,
}

/// The instant-query endpoint under an API root.
const QUERY_PATH: &str = "/api/v1/query";

/// What the store's clock read ([`Client::store_time`]).
pub const STORE_TIME_QUERY: &str = "vector(time())";

/// A Prometheus-compatible query API.
pub struct Client {
    /// The API root as given (`http://prom:9090`, `http://mimir/prometheus`).
    base: String,
    agent: ureq::Agent,
    timeout: Duration,
}

/// The roots `fleet` verifies an https API with: `--prometheus-ca`, else
/// this machine's bundle at the default paths (the operator's machine has
/// no `[system] ca_bundles`), chosen by [`crate::fetch::trust_roots`].
pub fn roots(ca_file: Option<&std::path::Path>) -> crate::fetch::Roots {
    crate::fetch::trust_roots(ca_file, &crate::fetch::system_ca_bundles())
}

/// Check `url` as an API root: http(s), a host, no query or fragment.
pub fn check_url(url: &str) -> Result<(), String> {
    let uri: ureq::http::Uri = url.parse().map_err(|e| format!("not a URL ({e})"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err("not an http(s) URL".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("names no host".into());
    }
    if uri.query().is_some() || url.contains('#') {
        return Err("an API root has no query or fragment".into());
    }
    Ok(())
}

impl Client {
    /// A client of the API at `base`; every request ends within `timeout`;
    /// an https API is verified with `roots` ([`roots`]), and refused here,
    /// before any handshake, when none load.
    pub fn new(
        base: &str,
        timeout: Duration,
        roots: &crate::fetch::Roots,
    ) -> Result<Client, PromError> {
        check_url(base).map_err(|reason| PromError::Url {
            url: base.to_string(),
            reason,
        })?;
        let https = crate::fetch::is_https(base);
        if let Some(why) = roots.why_missing().filter(|_| https) {
            return Err(PromError::Url {
                url: base.to_string(),
                reason: format!(
                    "{}: an https API cannot be verified",
                    why.cause("--prometheus-ca")
                ),
            });
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(roots.tls_config())
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            // A redirect is an answer (PromError::Redirect), see the module.
            .max_redirects(0)
            .build()
            .into();
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            agent,
            timeout,
        })
    }

    /// The query endpoint (shown in errors without user info).
    pub fn endpoint(&self) -> String {
        format!("{}{QUERY_PATH}", self.base)
    }

    /// Evaluate `promql` at unix time `at`: its instant vector, every
    /// sample of which the store evaluated at `at`.
    pub fn query(&self, promql: &str, at: i64) -> Result<Vec<Sample>, PromError> {
        let timed = self.ask(promql, Some(at))?;
        if let Some((t, _)) = timed.iter().find(|(t, _)| *t != at as f64) {
            return Err(PromError::Answer {
                url: self.endpoint(),
                reason: format!(
                    "evaluated at {}, not at the instant asked ({at}): the store or a front \
                     moved the query's time",
                    shown(*t)
                ),
            });
        }
        Ok(timed.into_iter().map(|(_, s)| s).collect())
    }

    /// The store's now, as its engine evaluates `time()` asked without a
    /// `time` (see [`super::clock`]), with this machine's clock when the
    /// question was sent and when the answer had arrived.
    pub fn store_time(&self) -> Result<super::clock::Reading, PromError> {
        let sent_ms = super::clock::now_ms();
        let answer = self.ask(STORE_TIME_QUERY, None)?;
        let received_ms = super::clock::now_ms();
        let store_ms = store_time_of(&answer).map_err(|reason| PromError::Answer {
            url: self.endpoint(),
            reason: format!("the answer to {STORE_TIME_QUERY} is not usable: {reason}"),
        })?;
        Ok(super::clock::Reading {
            store_ms,
            sent_ms,
            received_ms,
        })
    }

    /// A `Location` as an absolute URL (a path is on the API's origin),
    /// quoted.
    fn absolute(&self, location: &[u8]) -> String {
        let origin = self
            .base
            .parse::<ureq::http::Uri>()
            .ok()
            .and_then(|u| Some(format!("{}://{}", u.scheme_str()?, u.authority()?)));
        match (location, origin) {
            ([b'/', rest @ ..], Some(origin)) if rest.first() != Some(&b'/') => {
                quoted_bytes(&[origin.as_bytes(), location].concat())
            }
            _ => quoted_bytes(location),
        }
    }

    /// POST `promql` (at `at`, else at the store's now): the samples with
    /// the instant each was evaluated at.
    fn ask(&self, promql: &str, at: Option<i64>) -> Result<Vec<(f64, Sample)>, PromError> {
        let url = self.endpoint();
        let at = at.map(|t| t.to_string());
        // The server gives up by then too, instead of computing on.
        let timeout = format!("{}ms", self.timeout.as_millis().max(1));
        let mut pairs = vec![("query", promql)];
        if let Some(at) = &at {
            pairs.push(("time", at));
        }
        pairs.push(("timeout", &timeout));
        let form = form_encode(&pairs);
        let unreachable = |detail: String| PromError::Unreachable {
            url: url.clone(),
            detail,
        };
        let resp = self
            .agent
            .post(&url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Accept", "application/json")
            .send(form.as_bytes())
            .map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status().as_u16();
        if (300..400).contains(&status) {
            return Err(PromError::Redirect {
                url,
                status,
                location: resp
                    .headers()
                    .get("location")
                    .map_or_else(|| "(none)".into(), |l| self.absolute(l.as_bytes())),
            });
        }
        let mut body = Vec::new();
        resp.into_body()
            .into_with_config()
            .limit(MAX_ANSWER + 1)
            .reader()
            .take(MAX_ANSWER + 1)
            .read_to_end(&mut body)
            .map_err(|e| match body.len() as u64 > MAX_ANSWER {
                true => PromError::Answer {
                    url: url.clone(),
                    reason: format!("answer larger than {MAX_ANSWER} bytes"),
                },
                false => unreachable(e.to_string()),
            })?;
        if body.len() as u64 > MAX_ANSWER {
            return Err(PromError::Answer {
                url,
                reason: format!("answer larger than {MAX_ANSWER} bytes"),
            });
        }
        match parse_timed(&body) {
            Err(AnswerError::Api { error_type, error }) => Err(PromError::Api {
                url,
                error_type,
                error,
            }),
            // Only a success status carries data: a 5xx whose body reads as
            // an answer (a proxy's cached page, a server failing half way)
            // is no answer of the store's now.
            _ if !(200..300).contains(&status) => Err(PromError::Http {
                url,
                status,
                detail: first_line(&body, "no Prometheus error in the body"),
            }),
            Err(AnswerError::Format(reason)) => Err(PromError::Answer { url, reason }),
            Ok(samples) => Ok(samples),
        }
    }
}

/// The longest piece of a server's text quoted in a message, in bytes of
/// its quoted form.
const MAX_SHOWN: usize = 200;

/// What the first line of a non-API answer says (quoted by the shared rule,
/// [`crate::text::show_bounded`], and capped), else `fallback`.
fn first_line(body: &[u8], fallback: &str) -> String {
    let line = body.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line).trim_ascii();
    if line.is_empty() {
        fallback.to_string()
    } else {
        crate::text::show_bounded(line, MAX_SHOWN, false)
    }
}

/// A server's text (its `errorType`, `error`, a warning) as a message may
/// hold it: quoted by the shared rule and capped.
fn quoted(text: &str) -> String {
    quoted_bytes(text.as_bytes())
}

fn quoted_bytes(bytes: &[u8]) -> String {
    crate::text::show_bounded(bytes, MAX_SHOWN, false)
}

/// The store's now, in Unix milliseconds, from the answer to
/// [`STORE_TIME_QUERY`]: one sample without labels, a time after 1970.
pub fn store_time_of(answer: &[(f64, Sample)]) -> Result<i64, String> {
    match answer {
        [(_, s)] if s.labels.is_empty() && s.value > 0.0 && s.value < 1e14 => {
            Ok((s.value * 1000.0).round() as i64)
        }
        [(_, s)] => Err(format!("{:?} is not a time", s.value)),
        _ => Err(format!(
            "{} samples where one time was expected",
            answer.len()
        )),
    }
}

/// `application/x-www-form-urlencoded`: every byte but the unreserved
/// ones percent-encoded (`+` included, so a regex keeps its meaning).
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Why an answer could not be used.
#[derive(Debug, PartialEq)]
pub enum AnswerError {
    /// `"status": "error"` with its type and message.
    Api {
        /// The API's `errorType`.
        error_type: String,
        /// The API's `error` message.
        error: String,
    },
    /// Not the API's JSON, or not an instant vector of numbers.
    Format(String),
}

#[derive(serde::Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    /// A partial answer (a store of Thanos or Mimir that did not answer,
    /// a query the server cut short) says so here.
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(serde::Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(serde::Deserialize)]
struct VectorSample {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    /// `[unix time, "value"]`.
    value: (f64, String),
}

/// Parse an API answer into its instant vector (pure; see the module's
/// invariant).
pub fn parse_answer(body: &[u8]) -> Result<Vec<Sample>, AnswerError> {
    parse_timed(body).map(|timed| timed.into_iter().map(|(_, s)| s).collect())
}

/// [`parse_answer`], each sample with the instant it was evaluated at.
pub fn parse_timed(body: &[u8]) -> Result<Vec<(f64, Sample)>, AnswerError> {
    let not_an_answer = |e| AnswerError::Format(format!("not a Prometheus API answer: {e}"));
    // serde keeps the last of a key given twice: a series' label, a
    // sample's value or the status could then read two ways, and the
    // decision would rest on one of them. An answer has one reading.
    if let Some(path) = crate::manifest::duplicate_key(body).map_err(not_an_answer)? {
        return Err(AnswerError::Format(format!(
            "not a Prometheus API answer: {} appears twice in its object",
            quoted(&path)
        )));
    }
    let answer: Answer = serde_json::from_slice(body).map_err(not_an_answer)?;
    if answer.status != "success" {
        return Err(AnswerError::Api {
            error_type: answer
                .error_type
                .map_or_else(|| "unknown".into(), |t| quoted(&t)),
            error: answer.error.map_or_else(
                || format!("status \"{}\"", quoted(&answer.status)),
                |e| quoted(&e),
            ),
        });
    }
    if let Some(w) = answer.warnings.first() {
        return Err(AnswerError::Format(format!(
            "a partial answer ({} warning{}: {})",
            answer.warnings.len(),
            if answer.warnings.len() == 1 { "" } else { "s" },
            quoted(w)
        )));
    }
    let data = answer
        .data
        .ok_or_else(|| AnswerError::Format("a successful answer without data".into()))?;
    if data.result_type != "vector" {
        return Err(AnswerError::Format(format!(
            "result type {:?}, not an instant vector",
            data.result_type
        )));
    }
    let mut samples: Vec<VectorSample> = serde_json::from_value(data.result)
        .map_err(|e| AnswerError::Format(format!("not an instant vector: {e}")))?;
    // A label with an empty value is no label in PromQL: a series written
    // with one is the same series as without (found from outside: a front
    // that added `kind=""` made one series two, and its hosts counted twice).
    for s in &mut samples {
        s.metric.retain(|_, v| !v.is_empty());
    }
    // An instant vector holds one sample per series: a label set twice is
    // an answer that would count its hosts twice.
    let mut series: Vec<&BTreeMap<String, String>> = samples.iter().map(|s| &s.metric).collect();
    series.sort();
    if let Some(twice) = series.windows(2).find(|w| w[0] == w[1]) {
        return Err(AnswerError::Format(format!(
            "not an instant vector: the series {} twice",
            quoted(&format!("{:?}", twice[0]))
        )));
    }
    samples
        .into_iter()
        .map(|s| {
            let value: f64 = s.value.1.parse().map_err(|_| {
                AnswerError::Format(format!(
                    "sample value \"{}\" is not a number",
                    crate::text::show_bounded(s.value.1.as_bytes(), 64, false)
                ))
            })?;
            if !value.is_finite() {
                return Err(AnswerError::Format(format!(
                    "sample value \"{}\" is not finite",
                    crate::text::show_bounded(s.value.1.as_bytes(), 64, false)
                )));
            }
            Ok((
                s.value.0,
                Sample {
                    labels: s.metric,
                    value,
                },
            ))
        })
        .collect()
}

/// A PromQL double-quoted string literal of `s`.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // A bidirectional override too: the same string to PromQL,
            // and nothing a terminal reorders when `--dry-run` shows it.
            c if crate::text::acts_on_screen(c) => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A label matcher's operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`: the label equals the value.
    Equal,
    /// `!=`: the label differs from the value.
    NotEqual,
    /// `=~`: the label matches the regular expression (anchored).
    Regex,
    /// `!~`: the label does not match the regular expression.
    NotRegex,
}

impl MatchOp {
    fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

/// One label matcher of `--selector`.
#[derive(Clone, Debug, PartialEq)]
pub struct Matcher {
    /// The label's name (`region`).
    pub name: String,
    /// How its value is compared.
    pub op: MatchOp,
    /// The value or regular expression, unquoted.
    pub value: String,
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.name, self.op.as_str(), quote(&self.value))
    }
}

/// Parse `--selector 'region="eu",site=~"store-.*"'`: label matchers as
/// PromQL writes them, values in double quotes (escapes `\"`, `\\`,
/// `\n`, `\r`, `\t`, `\uXXXX`). The labels the controller sets itself (`compatible`,
/// `release`, …) are refused.
pub fn parse_selector(text: &str) -> Result<Vec<Matcher>, String> {
    let bad = |why: String| format!("--selector {text}: {why}");
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        if !valid_label_name(name) {
            return Err(bad(format!("{name:?} is not a label name")));
        }
        if RESERVED_LABELS.contains(&name) {
            return Err(bad(format!(
                "{name:?} is set by the controller from the manifest"
            )));
        }
        rest = rest[name_end..].trim_start();
        let op = [
            ("!=", MatchOp::NotEqual),
            ("=~", MatchOp::Regex),
            ("!~", MatchOp::NotRegex),
            ("=", MatchOp::Equal),
        ]
        .into_iter()
        .find(|(s, _)| rest.starts_with(s));
        let Some((op_text, op)) = op else {
            return Err(bad(format!("{name}: expected =, !=, =~ or !~")));
        };
        rest = rest[op_text.len()..].trim_start();
        let Some(body) = rest.strip_prefix('"') else {
            return Err(bad(format!("{name}: the value must be in double quotes")));
        };
        let mut value = String::new();
        let mut chars = body.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    end = Some(i);
                    break;
                }
                // The escapes [`quote`] writes (PromQL's, as Go's).
                '\\' => match chars.next() {
                    Some((_, '"')) => value.push('"'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, 'r')) => value.push('\r'),
                    Some((_, 't')) => value.push('\t'),
                    Some((_, 'u')) => {
                        let hex: String = chars.by_ref().take(4).map(|(_, c)| c).collect();
                        match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                            Some(c) if hex.len() == 4 => value.push(c),
                            _ => return Err(bad(format!("{name}: bad escape \\u{hex}"))),
                        }
                    }
                    other => {
                        return Err(bad(format!(
                            "{name}: unknown escape \\{}",
                            other.map(|(_, c)| c).unwrap_or(' ')
                        )))
                    }
                },
                c => value.push(c),
            }
        }
        let Some(end) = end else {
            return Err(bad(format!("{name}: unterminated value")));
        };
        out.push(Matcher {
            name: name.to_string(),
            op,
            value,
        });
        rest = body[end + 1..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        } else if !rest.is_empty() {
            return Err(bad(format!("expected a comma before {rest:?}")));
        }
    }
    Ok(out)
}

/// The label that names a host when none is given (`--host-label`):
/// node_exporter's scrape sets it.
pub const DEFAULT_HOST_LABEL: &str = "instance";

/// The shortest memory the queries keep of a wave (longer than any scrape
/// interval and Prometheus's 5 minutes of staleness).
pub const MIN_LOOKBACK_SECS: i64 = 10 * 60;

/// The longest: a week of a wave's failures and sizes (a wave that long has
/// been looked at by a person; the range stays cheap to evaluate).
pub const MAX_LOOKBACK_SECS: i64 = 7 * 24 * 3600;

/// How far back the queries look for a wave started at `wave_started`
/// (Unix seconds; 0 when the manifest does not say) at `now`: since the
/// wave started, within [`MIN_LOOKBACK_SECS`] and [`MAX_LOOKBACK_SECS`].
pub fn lookback(wave_started: i64, now: i64) -> i64 {
    now.saturating_sub(wave_started)
        .clamp(MIN_LOOKBACK_SECS, MAX_LOOKBACK_SECS)
}

/// Whether the store remembers the wave's start: how many scrape targets
/// it holds a sample of (`up`, the series every Prometheus-compatible
/// scraper records for each target it scrapes), asked at
/// [`history_instant`]. Every count of the wave reads the store's memory of
/// the lookback: a host that installed the release in the wave and then
/// went silent (a release that breaks its hosts) is held in the wave only
/// by its samples from before it went silent. A store that no longer holds
/// them (restarted on an empty database, a retention shorter than the
/// wave) would forget exactly those hosts and advance over them, so none
/// at that instant means no decision.
pub const HISTORY_QUERY: &str = "count(up)";

/// The instant the store must still hold samples of for the wave to be
/// judged: its start (the manifest's `created` for the first wave), within
/// the longest lookback ([`MAX_LOOKBACK_SECS`]) and not after `now`.
pub fn history_instant(wave_started: i64, now: i64) -> i64 {
    wave_started.clamp(now.saturating_sub(MAX_LOOKBACK_SECS), now)
}

/// The queries the controller asks about one release: all of them
/// aggregate on the server, so the answers stay a few samples over any
/// number of hosts. A host is one value of the host label: however many
/// series a host exports (one compromised host with two hundred label
/// sets), it is counted once.
///
/// Invariant: only in-wave commits advance a wave; a host that reported
/// the release in the wave is never forgotten within the lookback. A host
/// is in the wave when its latest position in the lookback (the largest,
/// if it exports several) is below the wave's percentage — the rule hosts
/// apply to themselves. Every count reads every raw sample of the
/// lookback (`last_over_time(…[lookback])`), never samples at steps: a
/// host seen for one scrape in the lookback, however long ago, counts in
/// the wave's size, and its latest outcome of the release in the lookback
/// counts in the tally even after its series went stale (a host whose
/// latest word is `installed` and then went silent is not committed: it
/// holds the wave).
///
/// Cost: Prometheus loads a range function's raw samples one series at a
/// time (`query.max-samples` bounds one host's series over the lookback,
/// 10,080 samples for a week of one-minute scrapes, not the fleet's), and
/// reads each position sample of the lookback once: CPU linear in hosts ×
/// scrapes in the lookback, which the lookback's cap ([`MAX_LOOKBACK_SECS`])
/// bounds. The outcome series of a release exist only on the hosts that
/// touched it. The subquery this replaced (24 instant passes over the
/// positions) cost less on a week-old wave but forgot a host alive only
/// between two of its steps. A host that never reported the release is
/// missed from the wave's size only when it exported no position sample
/// in the lookback: silent since before the wave started (or, for a wave
/// older than a week, for the whole last week), or never scraped.
#[derive(Clone, Debug, PartialEq)]
pub struct Queries {
    /// Hosts by (outcome, kind, in_wave): a host that failed the release in
    /// the lookback counts failed whatever it said after (a failure is not
    /// outranked by a clock that was wrong when it was stamped, nor by a
    /// host going silent); every other host by its latest outcome in the
    /// lookback (see [`super::counts_against_release`]). With a wave, hosts
    /// inside it carry `in_wave="1"`; hosts outside it, or without a
    /// position, carry no `in_wave` (their failures count, their commits do
    /// not advance the wave: [`tally_of`]).
    pub outcomes: String,
    /// Hosts with a failure of the release that does not blame it.
    pub not_counted: String,
    /// Hosts of the release's `compatible` (and selector) with a position
    /// in the lookback, split by whether the wave covers them (`in_wave`
    /// "1": latest position below its percentage; see [`hosts_of`]): hosts
    /// gone silent in the wave still count in its size.
    pub hosts: String,
    /// Series of the release's hosts without the host label: a host the
    /// queries cannot tell apart (must be none).
    pub unidentified: String,
    /// Hosts of an abupdate older than the `compatible` label whose trial
    /// of some release failed in the lookback, and that no outcome of this
    /// release already counts failed (the private `old_host_failures`).
    pub unattributed_failed: String,
}

/// Build the queries for release `version` of `compatible`, over hosts
/// matching `selector` and told apart by `host_label`, in a wave of
/// `percent` (none: no fixed wave), looking back `lookback_secs`.
pub fn queries(
    compatible: &str,
    version: &str,
    build: &str,
    selector: &[Matcher],
    percent: Option<f64>,
    host_label: &str,
    lookback_secs: i64,
) -> Queries {
    let mut hosts = vec![format!("compatible={}", quote(compatible))];
    hosts.extend(selector.iter().map(|m| m.to_string()));
    let hosts = hosts.join(",");
    // This build's outcomes, and those of hosts whose abupdate labels no
    // build (older versions: `=~"id|"` matches a missing label), so a
    // fleet upgraded host by host goes on deciding; another build's
    // outcomes under the same version never count.
    // A build id is hex digits ([`crate::manifest::build_id`]): nothing in
    // it is a regex metacharacter.
    debug_assert!(build.bytes().all(|b| b.is_ascii_hexdigit()), "{build}");
    let release = format!(
        "{hosts},release={},build=~{}",
        quote(version),
        quote(&format!("{build}|"))
    );
    let l = host_label;
    let range = format!("{lookback_secs}s");
    let failures: Vec<&str> = [
        Outcome::RolledBack,
        Outcome::TrialNeverBooted,
        Outcome::RolledBackLate,
    ]
    .iter()
    .map(|o| o.as_str())
    .collect();
    let others: Vec<&str> = [Outcome::Installed, Outcome::Committed, Outcome::Disarmed]
        .iter()
        .map(|o| o.as_str())
        .collect();
    let faults = super::RELEASE_FAULT_KINDS
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join("|");
    let failed = Outcome::Failed.as_str();
    // Each host's outcomes in the lookback that count against the release.
    let failed_here = format!(
        "last_over_time(abupdate_release_outcome{{{release},outcome=~\"{}\"}}[{range}]) or \
         last_over_time(abupdate_release_outcome{{{release},outcome=\"{failed}\",kind=~\"{faults}\"}}[{range}])",
        failures.join("|")
    );
    // One series per host: a failure in the lookback, else the latest
    // other outcome in the lookback (the outcome's value is its time).
    let per_host = format!(
        "topk by ({l}) (1, {failed_here}) \
         or on ({l}) \
         topk by ({l}) (1, last_over_time(abupdate_release_outcome{{{release},outcome=~\"{}\"}}[{range}]))",
        others.join("|")
    );
    // Each host's latest position in the lookback (the largest of its
    // series): every raw sample counts, none is skipped by a step.
    let position =
        format!("max by ({l}) (last_over_time(abupdate_rollout_position{{{hosts}}}[{range}]))");
    let outcomes = match percent {
        // `in_wave` is this query's own marker, and a host writes its
        // outcome series' labels itself (its textfile): a value it wrote
        // is dropped before the join, so no host can put itself in the
        // wave or make the answer unreadable (review 8, 01).
        Some(p) => {
            let unmarked = format!("label_replace({per_host}, \"in_wave\", \"\", \"\", \"\")");
            format!(
                "count by (outcome, kind, in_wave) (\
                 (({unmarked}) * on ({l}) group_left (in_wave) \
                 label_replace({position} * 100 < {p}, \"in_wave\", \"1\", \"\", \"\")) \
                 or on ({l}) ({unmarked}))"
            )
        }
        None => format!("count by (outcome, kind) ({per_host})"),
    };
    let not_counted = format!(
        "count(count by ({l}) (abupdate_release_outcome{{{release},outcome=\"{failed}\",kind!~\"{faults}\"}}))"
    );
    let hosts_query = match percent {
        Some(p) => format!("count_values(\"in_wave\", {position} * 100 < bool {p})"),
        None => format!("count({position})"),
    };
    let unidentified = format!(
        "count({{__name__=~\"abupdate_release_outcome|abupdate_rollout_position\",{hosts},{l}=\"\"}})"
    );
    // A host counted by this release's own outcome in the lookback is
    // counted by it, not here: failed (its trial verdict, scraped before
    // the older version rewrote the textfile) or committed (a host of the
    // older version that came back after the wave started, whose rollback
    // counter first seen in the lookback is a rollback of long ago, and
    // that then installed and committed the release: review 7, N3).
    let unattributed_failed = format!(
        "count(count by ({l}) ({}) unless on ({l}) (last_over_time(abupdate_release_outcome{{{release}}}[{range}])))",
        old_host_failures(selector, l, &range)
    );
    Queries {
        outcomes,
        not_counted,
        hosts: hosts_query,
        unidentified,
        unattributed_failed,
    }
}

/// The series of hosts of an abupdate older than the `compatible` label
/// (213989b and before: no `compatible`, no `abupdate_release_outcome`)
/// whose trial of a release failed in the lookback `range`: their
/// `abupdate_rollbacks_total` (both failed verdicts count there) or their
/// `abupdate_failures_total` of kind `health` or `trial_never_booted` rose
/// in it. These are the hosts that fell back to such a version from the
/// release that moves them off it: the version in the slot they fell back
/// to rewrites the textfile without the outcome the release's own binary
/// had written, so nothing else shows the failure. Which release failed is
/// not said, so any such rollback counts.
///
/// Counters as they are: `increase` reads a reset (the counter back to
/// zero) as no rise, and a gap (the newer textfile in place during the
/// trial, under other label sets) does not matter, as it reads the samples
/// on either side. A series absent when the lookback started (the host
/// silent then, or Prometheus holding nothing that old) shows no rise, so
/// it counts when it appeared with rollbacks and the host's last install
/// (`abupdate_last_success_timestamp_seconds`, its own clock) is in the
/// lookback: what a host that fell back from a release of this wave
/// looks like, where an old rollback of a host newly scraped does not.
fn old_host_failures(selector: &[Matcher], host_label: &str, range: &str) -> String {
    let l = host_label;
    let mut old = vec!["compatible=\"\"".to_string()];
    old.extend(selector.iter().map(or_absent));
    let old = old.join(",");
    // As the older version names its failed verdicts.
    let kinds = [
        crate::error::Kind::Health,
        crate::error::Kind::TrialNeverBooted,
    ]
    .map(|k| k.as_str())
    .join("|");
    format!(
        "increase(abupdate_rollbacks_total{{{old}}}[{range}]) > 0 \
         or increase(abupdate_failures_total{{{old},kind=~\"{kinds}\"}}[{range}]) > 0 \
         or ((last_over_time(abupdate_rollbacks_total{{{old}}}[{range}]) > 0 \
         unless abupdate_rollbacks_total{{{old}}} offset {range}) \
         and on ({l}) \
         last_over_time(abupdate_last_success_timestamp_seconds{{{old}}}[{range}]) > time() - {secs})",
        secs = range.trim_end_matches('s'),
    )
}

/// Matcher `m` for the series of an older abupdate: a series without its
/// label is kept too. Older hosts do not write `[report] labels`, so a
/// selector on one must not leave them out (a failure there is counted,
/// not missed); a label the scrape sets (a target's `region`) still
/// selects them.
fn or_absent(m: &Matcher) -> String {
    let re = match m.op {
        MatchOp::Equal => regex_escape(&m.value),
        MatchOp::Regex => format!("(?:{})", m.value),
        // An absent label is "", which differs from the value already.
        MatchOp::NotEqual | MatchOp::NotRegex => return m.to_string(),
    };
    format!("{}=~{}", m.name, quote(&format!("{re}|")))
}

/// `s` as a regular expression (RE2, as Prometheus reads it) matching `s`
/// alone.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// An answer grouped by `labels` carries those labels and no other: a
/// sample with another label is no answer to the query, and counting it
/// would count its hosts again (found from outside, stop 48: a front that
/// merges two replicas and tags each with `replica` made one commit two).
fn only_labels(samples: &[Sample], labels: &[&str]) -> Result<(), String> {
    for s in samples {
        if let Some(extra) = s.labels.keys().find(|k| !labels.contains(&k.as_str())) {
            return Err(format!(
                "a sample with the label {}, which the query does not group by",
                quoted(extra)
            ));
        }
    }
    Ok(())
}

/// (hosts reporting, hosts the wave covers) from the answer of
/// [`Queries::hosts`]; the second is `None` without a wave.
pub fn hosts_of(samples: &[Sample], wave: bool) -> Result<(u64, Option<u64>), String> {
    if !wave {
        return Ok((count_of(samples)?, None));
    }
    only_labels(samples, &["in_wave"])?;
    let (mut all, mut covered) = (0u64, 0u64);
    for s in samples {
        let n = whole(s.value)?;
        all += n;
        match s.labels.get("in_wave").map(String::as_str) {
            Some("1") => covered += n,
            Some("0") => {}
            other => return Err(format!("unexpected in_wave label {other:?}")),
        }
    }
    Ok((all, Some(covered)))
}

/// The single number of a `count(...)` answer: no sample is 0 (PromQL's
/// `count` of nothing is an empty vector).
pub fn count_of(samples: &[Sample]) -> Result<u64, String> {
    only_labels(samples, &[])?;
    match samples {
        [] => Ok(0),
        [s] => whole(s.value),
        _ => Err(format!(
            "{} samples where one count was expected",
            samples.len()
        )),
    }
}

fn whole(v: f64) -> Result<u64, String> {
    // At most 2^32 hosts a sample: more than any fleet, and small enough
    // that the samples of an answer (at most 4 MiB of them) cannot add up
    // past a u64 (found from outside: 2049 samples of 2^53 - 1 overflowed
    // the tally, a panic).
    if v >= 0.0 && v.fract() == 0.0 && v <= MAX_COUNT {
        Ok(v as u64)
    } else {
        Err(format!(
            "{} is not a count of hosts (a whole number, at most 2^32)",
            shown(v)
        ))
    }
}

/// A number from an answer as an error shows it: in full up to 2^53 (the
/// whole numbers a float holds exactly), else in exponent form, so that
/// `1e300` is not printed as 301 digits (found from outside, stop 57).
fn shown(v: f64) -> String {
    if v.abs() < 9_007_199_254_740_992.0 {
        format!("{v}")
    } else {
        format!("{v:e}")
    }
}

/// The largest count a sample may state ([`whole`]).
const MAX_COUNT: f64 = 4_294_967_296.0;

/// The tallies from the answer of [`Queries::outcomes`] and the count of
/// [`Queries::not_counted`], classified as the reports are: every host's
/// (the error condition's), and with a wave (`wave`) its own hosts' (the
/// `in_wave="1"` samples, the success condition's); a sample without
/// `in_wave` is a host outside the wave or without a position.
pub fn tally_of(
    outcomes: &[Sample],
    not_counted: u64,
    wave: bool,
) -> Result<(super::Tally, Option<super::Tally>), String> {
    use super::Verdict;
    let mut t = super::Tally {
        not_counted,
        ..Default::default()
    };
    let mut w = super::Tally::default();
    only_labels(outcomes, &["outcome", "kind", "in_wave"])?;
    for s in outcomes {
        let outcome = Outcome::parse(s.labels.get("outcome").map(String::as_str).unwrap_or(""));
        let kind = s
            .labels
            .get("kind")
            .map(String::as_str)
            .filter(|k| !k.is_empty());
        let n = whole(s.value)?;
        let verdict = super::counts_against_release(outcome, kind);
        // The query asks for known outcomes only, and for `failed` only
        // with a kind that blames the release: anything else is an answer
        // it did not ask for.
        let asked = match verdict {
            Verdict::Unknown => false,
            Verdict::NotCounted => outcome == Some(Outcome::Disarmed),
            _ => true,
        };
        if !asked {
            return Err(format!(
                "a sample of outcome {:?}, kind {:?}, which the query does not ask for",
                s.labels.get("outcome"),
                s.labels.get("kind")
            ));
        }
        let inside = match (wave, s.labels.get("in_wave").map(String::as_str)) {
            (true, Some("1")) => true,
            (_, None) => false,
            (_, other) => return Err(format!("unexpected in_wave label {other:?}")),
        };
        for (tally, counts) in [(&mut t, true), (&mut w, inside)] {
            if !counts {
                continue;
            }
            match verdict {
                Verdict::Installed => tally.installed += n,
                Verdict::Committed => tally.committed += n,
                Verdict::Failed => tally.failed += n,
                Verdict::NotCounted | Verdict::Unknown => tally.not_counted += n,
            }
        }
    }
    Ok((t, wave.then_some(w)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        }
    }

    /// Whether an API root needs trust roots is [`crate::fetch::is_https`]'s
    /// rule, the one every client of the host goes by: the scheme in any
    /// case is https, and without roots such a root is refused up front.
    #[test]
    fn an_https_api_root_in_any_case_needs_roots_and_http_does_not() {
        let dir = crate::testutil::TempDir::new("prom-roots");
        let none = crate::fetch::trust_roots(None, &[dir.join("ca-certificates.crt")]);
        let timeout = Duration::from_secs(1);
        for https in ["https://prom:9090", "HTTPS://prom:9090", "HttpS://prom/api"] {
            match Client::new(https, timeout, &none) {
                Err(PromError::Url { reason, .. }) => {
                    assert!(
                        reason.ends_with("an https API cannot be verified"),
                        "{reason}"
                    )
                }
                other => panic!("{https}: {:?}", other.err().map(|e| e.to_string())),
            }
        }
        for http in ["http://prom:9090", "HTTP://prom:9090"] {
            assert!(Client::new(http, timeout, &none).is_ok(), "{http}");
        }
    }

    #[test]
    fn a_vector_answer_is_read() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"outcome":"committed"},"value":[1700000000.5,"48"]},
            {"metric":{"outcome":"failed","kind":"hash_mismatch"},"value":[1700000000.5,"2"]}]}}"#;
        assert_eq!(
            parse_answer(body),
            Ok(vec![
                sample(&[("outcome", "committed")], 48.0),
                sample(&[("outcome", "failed"), ("kind", "hash_mismatch")], 2.0),
            ])
        );
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse_answer(empty), Ok(vec![]));
    }

    #[test]
    fn anything_but_a_successful_vector_of_numbers_is_an_error() {
        let error = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#;
        assert_eq!(
            parse_answer(error),
            Err(AnswerError::Api {
                error_type: "bad_data".into(),
                error: "parse error at char 5".into()
            })
        );
        for bad in [
            &b"<html>502 Bad Gateway</html>"[..],
            br#"{"status":"success"}"#,
            br#"{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}"#,
            br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#,
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"+Inf"]}]}}"#,
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"many"]}]}}"#,
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{}}]}}"#,
            // One series twice (found from outside, stop 47: its hosts
            // were counted twice).
            br#"{"status":"success","data":{"resultType":"vector","result":[
                {"metric":{"outcome":"committed"},"value":[1,"1"]},
                {"metric":{"outcome":"failed"},"value":[1,"1"]},
                {"metric":{"outcome":"committed"},"value":[1,"1"]}]}}"#,
            // The same twice with an empty label, which PromQL reads as
            // none (found from outside: a front that added `kind=""`).
            br#"{"status":"success","data":{"resultType":"vector","result":[
                {"metric":{"outcome":"committed","in_wave":"1"},"value":[1,"1"]},
                {"metric":{"outcome":"committed","in_wave":"1","kind":""},"value":[1,"1"]}]}}"#,
        ] {
            assert!(
                matches!(parse_answer(bad), Err(AnswerError::Format(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// Found from outside: 2049 samples of 2^53 - 1 hosts overflowed the
    /// tally (a panic, exit 101). A sample counts at most 2^32 hosts, so an
    /// answer's sum fits; more is no count.
    #[test]
    fn a_sample_of_more_hosts_than_any_fleet_is_no_count() {
        assert_eq!(whole(4_294_967_296.0), Ok(1 << 32));
        for bad in [4_294_967_297.0, 9_007_199_254_740_991.0, -1.0, 0.5] {
            let e = whole(bad).expect_err("not a count");
            assert!(
                e.ends_with("is not a count of hosts (a whole number, at most 2^32)"),
                "{e}"
            );
        }
        assert_eq!(
            whole(1e300).expect_err("not a count"),
            "1e300 is not a count of hosts (a whole number, at most 2^32)"
        );
        assert!(whole(9_007_199_254_740_991.0)
            .expect_err("not a count")
            .starts_with("9007199254740991 is"));
        let many: Vec<Sample> = (0..2049)
            .map(|i| {
                sample(
                    &[
                        ("outcome", "committed"),
                        ("in_wave", "1"),
                        ("kind", &format!("k{i}")),
                    ],
                    4_294_967_296.0,
                )
            })
            .collect();
        let (t, w) = tally_of(&many, 0, true).expect("fits");
        assert_eq!(t.committed, 2049 << 32);
        assert_eq!(w.map(|w| w.finished()), Some(2049 << 32));
    }

    /// A key twice in one object (left at stop 55): serde keeps the last,
    /// so `failed` read as `committed`, or a second status, decided. The
    /// answer is refused, naming where.
    #[test]
    fn an_answer_that_names_a_key_twice_is_refused_naming_it() {
        for (bad, path) in [
            (
                &br#"{"status":"success","data":{"resultType":"vector","result":[
                {"metric":{"outcome":"failed","outcome":"committed"},"value":[1,"5"]}]}}"#[..],
                "data.result[0].metric.outcome",
            ),
            (
                br#"{"status":"error","status":"success","data":{"resultType":"vector","result":[]}}"#,
                "status",
            ),
        ] {
            let Err(AnswerError::Format(why)) = parse_answer(bad) else {
                panic!("accepted: {}", String::from_utf8_lossy(bad))
            };
            assert_eq!(
                why,
                format!("not a Prometheus API answer: {path} appears twice in its object")
            );
        }
    }

    /// A Prometheus server's own text (an error, a warning, an HTML error
    /// page) reaches the message quoted: ESC and a bidi override escaped.
    #[test]
    fn a_servers_text_reaches_the_message_escaped() {
        let error = br#"{"status":"error","errorType":"bad\u202edata","error":"x\u001b[2J"}"#;
        assert_eq!(
            parse_answer(error),
            Err(AnswerError::Api {
                error_type: "bad\\xe2\\x80\\xaedata".into(),
                error: "x\\x1b[2J".into()
            })
        );
        let warned = br#"{"status":"success","warnings":["a\u202eb"],"data":{"resultType":"vector","result":[]}}"#;
        let Err(AnswerError::Format(why)) = parse_answer(warned) else {
            panic!("a warning is an error")
        };
        assert!(why.ends_with("warning: a\\xe2\\x80\\xaeb)"), "{why}");
        let page = "<h1>\u{202e}oops\x1b[2J</h1>\r\nsecond".as_bytes();
        assert_eq!(
            first_line(page, "fallback"),
            "<h1>\\xe2\\x80\\xaeoops\\x1b[2J</h1>"
        );
        assert_eq!(first_line(b" \r\n", "fallback"), "fallback");
    }

    #[test]
    fn hosts_and_the_wave_come_from_one_answer() {
        let answer = [
            sample(&[("in_wave", "0")], 9048.0),
            sample(&[("in_wave", "1")], 952.0),
        ];
        assert_eq!(hosts_of(&answer, true), Ok((10000, Some(952))));
        assert_eq!(hosts_of(&answer[..1], true), Ok((9048, Some(0))));
        assert_eq!(hosts_of(&[], true), Ok((0, Some(0))));
        assert_eq!(hosts_of(&[sample(&[], 7.0)], false), Ok((7, None)));
        assert!(hosts_of(&[sample(&[("in_wave", "2")], 1.0)], true).is_err());
    }

    #[test]
    fn counts_must_be_whole_and_single() {
        assert_eq!(count_of(&[]), Ok(0));
        assert_eq!(count_of(&[sample(&[], 12.0)]), Ok(12));
        assert!(count_of(&[sample(&[], 1.5)]).is_err());
        assert!(count_of(&[sample(&[], -1.0)]).is_err());
        assert!(count_of(&[sample(&[], 1.0), sample(&[], 2.0)]).is_err());
    }

    #[test]
    fn the_tally_classifies_outcomes_as_the_reports_do() {
        let outcomes = [
            sample(&[("outcome", "installed")], 3.0),
            sample(&[("outcome", "committed")], 40.0),
            sample(&[("outcome", "rolled_back")], 2.0),
            sample(&[("outcome", "trial_never_booted")], 1.0),
            sample(&[("outcome", "failed"), ("kind", "hash_mismatch")], 1.0),
            sample(&[("outcome", "disarmed")], 1.0),
        ];
        assert_eq!(
            tally_of(&outcomes, 4, false),
            Ok((
                super::super::Tally {
                    installed: 3,
                    committed: 40,
                    failed: 4,
                    not_counted: 5,
                    failed_unattributed: 0,
                },
                None
            ))
        );
    }

    #[test]
    fn only_in_wave_samples_make_the_waves_tally_and_every_sample_the_fleets() {
        let outcomes = [
            sample(&[("outcome", "installed"), ("in_wave", "1")], 1.0),
            sample(&[("outcome", "committed"), ("in_wave", "1")], 2.0),
            sample(&[("outcome", "committed")], 10.0),
            sample(&[("outcome", "rolled_back")], 1.0),
            sample(&[("outcome", "rolled_back"), ("in_wave", "1")], 1.0),
            sample(&[("outcome", "disarmed"), ("in_wave", "1")], 1.0),
        ];
        let tally = |installed, committed, failed, not_counted| super::super::Tally {
            installed,
            committed,
            failed,
            not_counted,
            failed_unattributed: 0,
        };
        assert_eq!(
            tally_of(&outcomes, 3, true),
            Ok((tally(1, 12, 2, 4), Some(tally(1, 2, 1, 1))))
        );
        // No sample in the wave: an empty wave tally, not an unknown one.
        assert_eq!(
            tally_of(&outcomes[2..4], 0, true),
            Ok((tally(0, 10, 1, 0), Some(tally(0, 0, 0, 0))))
        );
        // An in_wave value the query does not write, or one without a wave.
        for (labels, wave) in [
            (vec![("outcome", "committed"), ("in_wave", "0")], true),
            (vec![("outcome", "committed"), ("in_wave", "")], true),
            (vec![("outcome", "committed"), ("in_wave", "1")], false),
        ] {
            let e = tally_of(&[sample(&labels, 1.0)], 0, wave).expect_err("in_wave");
            assert!(e.contains("in_wave"), "{e}");
        }
    }

    /// Found from outside (stop 48): a front merging two replicas tagged
    /// each sample (`replica`); the grouping key came twice and one commit
    /// counted as two. A label the query does not group by is no answer.
    #[test]
    fn a_label_the_query_does_not_group_by_makes_the_answer_unusable() {
        let twice = [
            sample(
                &[("outcome", "committed"), ("in_wave", "1"), ("replica", "a")],
                1.0,
            ),
            sample(
                &[("outcome", "committed"), ("in_wave", "1"), ("replica", "b")],
                1.0,
            ),
        ];
        let e = tally_of(&twice, 0, true).expect_err("extra label");
        assert!(
            e.contains("replica") && e.contains("does not group by"),
            "{e}"
        );
        let e = hosts_of(&[sample(&[("in_wave", "1"), ("replica", "a")], 2.0)], true)
            .expect_err("extra label");
        assert!(e.contains("replica"), "{e}");
        let e = count_of(&[sample(&[("instance", "h")], 2.0)]).expect_err("extra label");
        assert!(e.contains("instance"), "{e}");
        // The query's own labels still read.
        assert_eq!(
            hosts_of(&[sample(&[("in_wave", "1")], 2.0)], true),
            Ok((2, Some(2)))
        );
        assert_eq!(count_of(&[sample(&[], 3.0)]), Ok(3));
    }

    #[test]
    fn an_outcome_the_query_did_not_ask_for_makes_the_answer_unusable() {
        for labels in [
            vec![("outcome", "quarantined")],
            vec![("outcome", "ROLLED_BACK")],
            vec![],
            vec![("outcome", "failed")],
            vec![("outcome", "failed"), ("kind", "network")],
        ] {
            let e = tally_of(&[sample(&labels, 2.0)], 0, true).expect_err("unknown outcome");
            assert!(e.contains("does not ask for"), "{e}");
        }
    }

    #[test]
    fn a_partial_answer_with_warnings_is_refused() {
        let body = br#"{"status":"success","warnings":["PromQL partial response: store x unavailable"],
            "data":{"resultType":"vector","result":[{"metric":{"outcome":"committed"},"value":[1,"9"]}]}}"#;
        match parse_answer(body) {
            Err(AnswerError::Format(e)) => {
                assert!(
                    e.contains("partial answer") && e.contains("store x unavailable"),
                    "{e}"
                )
            }
            other => panic!("{other:?}"),
        }
        let empty =
            br#"{"status":"success","warnings":[],"data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse_answer(empty), Ok(vec![]));
    }

    /// A store's answer is outside bytes: a value that is no number is
    /// named in a bounded, escaped cut of itself, never in full.
    #[test]
    fn a_value_that_is_no_number_is_named_in_a_bounded_cut() {
        let long = "7".repeat(100_000);
        for (value, want) in [
            (format!("{long}x"), "is not a number"),
            ("\u{1b}[2J+Inf".to_string(), "is not a number"),
            ("1e999".to_string(), "is not finite"),
        ] {
            let body = serde_json::json!({"status": "success", "data": {"resultType": "vector",
                "result": [{"metric": {}, "value": [1700000000, value]}]}});
            match parse_timed(body.to_string().as_bytes()) {
                Err(AnswerError::Format(e)) => {
                    assert!(e.ends_with(want) && e.len() < 120, "{e}");
                    assert!(!e.contains('\u{1b}'), "{e}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn each_sample_keeps_the_instant_it_was_evaluated_at() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"outcome":"committed"},"value":[1700000000,"48"]},
            {"metric":{},"value":[1699999970.5,"1"]}]}}"#;
        assert_eq!(
            parse_timed(body),
            Ok(vec![
                (1_700_000_000.0, sample(&[("outcome", "committed")], 48.0)),
                (1_699_999_970.5, sample(&[], 1.0)),
            ])
        );
    }

    /// `vector(time())`: one sample without labels, its value the store's
    /// now in seconds (Prometheus writes milliseconds as a fraction).
    #[test]
    fn the_stores_now_is_read_from_its_time() {
        let at = |value: f64| vec![(value, sample(&[], value))];
        assert_eq!(store_time_of(&at(1_800_000_000.123)), Ok(1_800_000_000_123));
        assert_eq!(store_time_of(&at(1_800_000_000.0)), Ok(1_800_000_000_000));
        for bad in [
            vec![],
            [at(1.0), at(2.0)].concat(),
            vec![(1.0, sample(&[("job", "x")], 1_800_000_000.0))],
            at(0.0),
            at(-5.0),
            at(1e15),
        ] {
            assert!(store_time_of(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_redirect_names_both_addresses_and_the_root_to_use() {
        let redirect = |location: &str| {
            PromError::Redirect {
                url: "http://front:9090/api/v1/query".into(),
                status: 302,
                location: location.into(),
            }
            .to_string()
        };
        let e = redirect("https://prom.example/new/api/v1/query");
        assert!(
            e.starts_with(
                "http://front:9090/api/v1/query: HTTP 302 redirect to \
                 https://prom.example/new/api/v1/query, not followed"
            ) && e.ends_with("use --prometheus https://prom.example/new"),
            "{e}"
        );
        let e = redirect("/login");
        assert!(
            e.ends_with("give --prometheus the query API's own root"),
            "{e}"
        );
    }

    #[test]
    fn the_lookback_is_the_wave_within_ten_minutes_and_a_week() {
        let now = 1_800_000_000;
        assert_eq!(lookback(now - 3600, now), 3600);
        assert_eq!(lookback(now - 60, now), MIN_LOOKBACK_SECS);
        assert_eq!(lookback(now + 600, now), MIN_LOOKBACK_SECS);
        assert_eq!(lookback(0, now), MAX_LOOKBACK_SECS);
    }

    #[test]
    fn the_store_must_remember_the_waves_start_within_a_week_and_not_after_now() {
        let now = 1_800_000_000;
        assert_eq!(history_instant(now - 3600, now), now - 3600);
        // A `created` ahead of the store's clock: its now.
        assert_eq!(history_instant(now + 600, now), now);
        // A wave older than the longest lookback: what the lookback reads.
        assert_eq!(history_instant(0, now), now - MAX_LOOKBACK_SECS);
    }

    #[test]
    fn strings_are_quoted_for_promql() {
        assert_eq!(quote("eu"), "\"eu\"");
        assert_eq!(quote("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
        assert_eq!(quote("\u{1}"), "\"\\u0001\"");
        // A bidi override is escaped as PromQL writes it: the same string.
        assert_eq!(quote("a\u{202e}b"), "\"a\\u202eb\"");
    }

    #[test]
    fn selectors_parse_as_promql_matchers() {
        let m = parse_selector(r#"region="eu", site=~"store-[0-9]+",tier!="lab",x!~"a\"b\\""#)
            .expect("selector");
        assert_eq!(
            m.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
            [
                r#"region="eu""#,
                r#"site=~"store-[0-9]+""#,
                r#"tier!="lab""#,
                r#"x!~"a\"b\\""#
            ]
        );
        assert_eq!(parse_selector("").expect("empty"), vec![]);
        // What quote writes parses back.
        let odd = Matcher {
            name: "site".into(),
            op: MatchOp::Equal,
            value: "a\r\tb\u{1}\"\\\n".into(),
        };
        assert_eq!(parse_selector(&odd.to_string()), Ok(vec![odd]));
        for bad in [
            "region=eu",
            "region=\"eu",
            "9x=\"a\"",
            "region\"eu\"",
            "region==\"eu\"",
            "release=\"2.0\"",
            "compatible=\"x\"",
            "__name__=\"up\"",
            "a=\"1\" b=\"2\"",
            "a=\"\\q\"",
        ] {
            let e = parse_selector(bad).expect_err(bad);
            assert!(e.starts_with("--selector"), "{e}");
        }
    }

    #[test]
    fn queries_aggregate_by_host_and_carry_the_release_and_selector() {
        let sel = parse_selector(r#"region="eu""#).expect("selector");
        let q = queries(
            "acme \"x\"",
            "2.0",
            "0123456789abcdef",
            &sel,
            Some(2.0),
            "instance",
            3600,
        );
        let hosts = r#"compatible="acme \"x\"",region="eu""#;
        let release = format!("{hosts},release=\"2.0\",build=~\"0123456789abcdef|\"");
        let per_host = format!(
            "topk by (instance) (1, \
             last_over_time(abupdate_release_outcome{{{release},outcome=~\"rolled_back|trial_never_booted|rolled_back_late\"}}[3600s]) or \
             last_over_time(abupdate_release_outcome{{{release},outcome=\"failed\",kind=~\"payload|hash_mismatch|size|too_long|too_short|signature|manifest|no_fallback\"}}[3600s])) \
             or on (instance) \
             topk by (instance) (1, last_over_time(abupdate_release_outcome{{{release},outcome=~\"installed|committed|disarmed\"}}[3600s]))"
        );
        let position = format!(
            "max by (instance) (last_over_time(abupdate_rollout_position{{{hosts}}}[3600s]))"
        );
        // Each host's outcome, its own `in_wave` dropped, joined with its
        // position: in the wave or not (no label), and a host without a
        // position still counted.
        let per_host = format!("label_replace({per_host}, \"in_wave\", \"\", \"\", \"\")");
        assert_eq!(
            q.outcomes,
            format!(
                "count by (outcome, kind, in_wave) (\
                 (({per_host}) * on (instance) group_left (in_wave) \
                 label_replace({position} * 100 < 2, \"in_wave\", \"1\", \"\", \"\")) \
                 or on (instance) ({per_host}))"
            )
        );
        // Every raw sample of the lookback, no subquery steps.
        assert_eq!(
            q.hosts,
            format!("count_values(\"in_wave\", {position} * 100 < bool 2)")
        );
        assert_eq!(
            q.not_counted,
            format!("count(count by (instance) (abupdate_release_outcome{{{release},outcome=\"failed\",kind!~\"payload|hash_mismatch|size|too_long|too_short|signature|manifest|no_fallback\"}}))")
        );
        assert_eq!(
            q.unidentified,
            format!("count({{__name__=~\"abupdate_release_outcome|abupdate_rollout_position\",{hosts},instance=\"\"}})")
        );
        // Hosts of an older abupdate: no `compatible`, the selector or no
        // such label; not those counted by an outcome of the release.
        let old = r#"compatible="",region=~"eu|""#;
        assert_eq!(
            q.unattributed_failed,
            format!(
                "count(count by (instance) (\
                 increase(abupdate_rollbacks_total{{{old}}}[3600s]) > 0 \
                 or increase(abupdate_failures_total{{{old},kind=~\"health|trial_never_booted\"}}[3600s]) > 0 \
                 or ((last_over_time(abupdate_rollbacks_total{{{old}}}[3600s]) > 0 \
                 unless abupdate_rollbacks_total{{{old}}} offset 3600s) \
                 and on (instance) \
                 last_over_time(abupdate_last_success_timestamp_seconds{{{old}}}[3600s]) > time() - 3600)) \
                 unless on (instance) (\
                 last_over_time(abupdate_release_outcome{{{release}}}[3600s])))"
            )
        );
        let no_wave = queries("c", "2.0", "00", &[], None, "site", 7 * 24 * 3600);
        assert_eq!(
            no_wave.hosts,
            "count(max by (site) (last_over_time(abupdate_rollout_position{compatible=\"c\"}[604800s])))"
        );
        assert!(
            no_wave
                .outcomes
                .starts_with("count by (outcome, kind) (topk by (site) (1, ")
                && !no_wave.outcomes.contains("in_wave"),
            "{}",
            no_wave.outcomes
        );
    }

    /// A selector keeps an older host's series that lack its label (they
    /// may be `[report] labels`, which older hosts do not write).
    #[test]
    fn older_hosts_are_selected_with_or_without_the_selectors_labels() {
        let m = parse_selector(r#"region="e.u|x",site=~"s-[0-9]+",tier!="lab",x!~"a""#)
            .expect("selector");
        assert_eq!(
            m.iter().map(or_absent).collect::<Vec<_>>(),
            [
                r#"region=~"e\\.u\\|x|""#,
                r#"site=~"(?:s-[0-9]+)|""#,
                r#"tier!="lab""#,
                r#"x!~"a""#
            ]
        );
        assert_eq!(
            regex_escape(r"a.b*c\(d)[e]{f}^$?+|"),
            r"a\.b\*c\\\(d\)\[e\]\{f\}\^\$\?\+\|"
        );
    }

    #[test]
    fn forms_encode_every_reserved_byte() {
        assert_eq!(
            form_encode(&[("query", "a+b{x=\"é\"} & c"), ("time", "17")]),
            "query=a%2Bb%7Bx%3D%22%C3%A9%22%7D%20%26%20c&time=17"
        );
    }

    #[test]
    fn api_roots_are_checked() {
        assert!(check_url("http://127.0.0.1:9090").is_ok());
        assert!(check_url("https://mimir.example/prometheus/").is_ok());
        for bad in [
            "ftp://x",
            "prometheus:9090",
            "http://x/?a=1",
            "http://x/#f",
            "",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}
