//! The providers' calendar APIs: Google Calendar API v3 and Microsoft Graph v1.0, behind one
//! shape ([`Outgoing`] pushed, [`RemoteEvent`] read back), called with the connection's access
//! token (refreshed before it expires, and once more on a 401), `Retry-After` honoured on 429.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use http::Method;
use serde_json::{Value, json};

use super::{Provider, SyncError};
use crate::outbound::{Call, Outbound};

/// The most of one API answer read (a page of events).
const MAX_PAGE_BYTES: usize = 8 * 1024 * 1024;
/// The longest `Retry-After` waited inside a job; longer, the job is retried later.
const MAX_INLINE_WAIT: Duration = Duration::from_secs(30);
/// Pages one change listing may follow (a runaway `nextLink` loop stops here).
const MAX_PAGES: usize = 1_000;

/// The Graph single-value extended property that carries the LexiFlow event id.
const GRAPH_LEXIFLOW_ID: &str = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name lexiflowId";

/// A start or end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    At(DateTime<Utc>),
    /// All-day: a date (an end is exclusive, as both providers write it).
    Day(NaiveDate),
}

/// What LexiFlow pushes.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub lexiflow_id: uuid::Uuid,
    pub title: String,
    pub description: Option<String>,
    pub location: Option<String>,
    pub start: When,
    pub end: When,
    pub time_zone: String,
    /// E-mail and name of each attendee who may see the event now (`Syncer::outgoing` leaves the
    /// others out): Google puts a copy of the event in every guest's calendar.
    pub attendees: Vec<(String, Option<String>)>,
    pub reminders: Vec<u32>,
}

/// A provider's event as read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RemoteEvent {
    pub id: String,
    pub etag: Option<String>,
    pub updated: Option<DateTime<Utc>>,
    pub deleted: bool,
    pub title: Option<String>,
    pub description: Option<String>,
    pub location: Option<String>,
    pub start: Option<When>,
    pub end: Option<When>,
}

/// Authorised calls to one connection's API.
pub struct Api<'a> {
    pub outbound: &'a Arc<Outbound>,
    pub provider: Provider,
    pub base: &'a str,
    /// A fresh access token, on demand (refreshing it when it is about to expire, or when
    /// `force`).
    pub token: &'a (dyn Fn(bool) -> futures_util::future::BoxFuture<'a, Result<String, SyncError>> + Send + Sync),
}

fn retry_after(h: &http::HeaderMap) -> Duration {
    let v = h.get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).unwrap_or("");
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Duration::from_secs(secs);
    }
    if let Ok(at) = DateTime::parse_from_rfc2822(v.trim()) {
        return (at.with_timezone(&Utc) - Utc::now()).to_std().unwrap_or_default();
    }
    Duration::from_secs(5)
}

impl Api<'_> {
    /// Sends one call; a 401 refreshes the token and tries once more, a 429 waits its
    /// `Retry-After` (up to [`MAX_INLINE_WAIT`], three times) before giving up as rate-limited.
    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<(u16, http::HeaderMap, Value), SyncError> {
        let url = url::Url::parse(url).map_err(|e| SyncError::Invalid(format!("bad URL {url}: {e}")))?;
        let payload = body.map(|b| bytes::Bytes::from(b.to_string())).unwrap_or_default();
        let mut refreshed = false;
        let mut waits = 0;
        loop {
            let token = (self.token)(false).await?;
            let token = if refreshed { (self.token)(true).await? } else { token };
            let mut headers: Vec<(&str, String)> =
                vec![("authorization", format!("Bearer {token}")), ("accept", "application/json".into())];
            if body.is_some() {
                headers.push(("content-type", "application/json".into()));
            }
            if let Some(e) = if_match {
                headers.push(("if-match", e.to_owned()));
            }
            if self.provider == Provider::Microsoft {
                // Times in UTC whatever the mailbox's zone, and bodies as text, not HTML.
                headers.push(("prefer", "outlook.timezone=\"UTC\", outlook.body-content-type=\"text\"".into()));
            }
            let a = self
                .outbound
                .send(
                    self.provider.dependency(),
                    Call {
                        method: method.clone(),
                        url: &url,
                        headers: &headers,
                        body: payload.clone(),
                        max_body: MAX_PAGE_BYTES,
                    },
                )
                .await
                .map_err(|e| SyncError::Transport(e.to_string()))?;
            match a.status {
                401 if !refreshed => {
                    refreshed = true;
                    continue;
                }
                401 => return Err(SyncError::Unauthorized),
                429 => {
                    let wait = retry_after(&a.headers);
                    if wait > MAX_INLINE_WAIT || waits >= 3 {
                        return Err(SyncError::RateLimited(wait));
                    }
                    waits += 1;
                    tokio::time::sleep(wait).await;
                    continue;
                }
                _ => {}
            }
            let json =
                if a.body.is_empty() { Value::Null } else { serde_json::from_slice(&a.body).unwrap_or(Value::Null) };
            return Ok((a.status, a.headers, json));
        }
    }

    fn fail(status: u16, body: &Value) -> SyncError {
        let msg = body
            .pointer("/error/message")
            .and_then(Value::as_str)
            .or_else(|| body.pointer("/error/code").and_then(Value::as_str))
            .unwrap_or("")
            .chars()
            .take(300)
            .collect::<String>();
        if status >= 500 { SyncError::Transport(format!("{status} {msg}")) } else { SyncError::Http(status, msg) }
    }

    fn events_url(&self) -> String {
        match self.provider {
            Provider::Google => format!("{}/calendars/primary/events", self.base),
            Provider::Microsoft => format!("{}/me/events", self.base),
        }
    }

    /// The address of one event for a write: on Google with `sendUpdates=none`, so LexiFlow
    /// sends no invitation or update mail to the attendees it lists.
    fn event_url(&self, id: &str) -> String {
        match self.provider {
            Provider::Google => format!("{}/{}?sendUpdates=none", self.events_url(), urlencode(id)),
            Provider::Microsoft => format!("{}/{}", self.events_url(), urlencode(id)),
        }
    }

    /// Creates the event.
    pub async fn create(&self, e: &Outgoing) -> Result<RemoteEvent, SyncError> {
        let body = self.body(e);
        let url = match self.provider {
            Provider::Google => format!("{}?sendUpdates=none", self.events_url()),
            Provider::Microsoft => self.events_url(),
        };
        let (status, _, json) = self.send(Method::POST, &url, Some(&body), None).await?;
        if !(200..300).contains(&status) {
            return Err(Self::fail(status, &json));
        }
        self.parse(&json).ok_or_else(|| SyncError::Invalid("the created event has no id".into()))
    }

    /// Replaces the event's fields; `etag` makes it conditional (412: changed since).
    pub async fn update(&self, id: &str, etag: Option<&str>, e: &Outgoing) -> Result<RemoteEvent, SyncError> {
        let body = self.body(e);
        let url = self.event_url(id);
        let method = if self.provider == Provider::Google { Method::PUT } else { Method::PATCH };
        let (status, _, json) = self.send(method, &url, Some(&body), etag).await?;
        match status {
            200..=299 => self.parse(&json).ok_or_else(|| SyncError::Invalid("the updated event has no id".into())),
            412 => Err(SyncError::Precondition),
            404 | 410 => Err(SyncError::Gone),
            _ => Err(Self::fail(status, &json)),
        }
    }

    /// Deletes the event (already gone is fine).
    pub async fn delete(&self, id: &str) -> Result<(), SyncError> {
        let url = self.event_url(id);
        let (status, _, json) = self.send(Method::DELETE, &url, None, None).await?;
        match status {
            200..=299 | 404 | 410 => Ok(()),
            _ => Err(Self::fail(status, &json)),
        }
    }

    /// The event as it is now (None when it is gone).
    pub async fn get(&self, id: &str) -> Result<Option<RemoteEvent>, SyncError> {
        let url = format!("{}/{}", self.events_url(), urlencode(id));
        let (status, _, json) = self.send(Method::GET, &url, None, None).await?;
        match status {
            200..=299 => Ok(self.parse(&json).filter(|r| !r.deleted)),
            404 | 410 => Ok(None),
            _ => Err(Self::fail(status, &json)),
        }
    }

    /// The copy of LexiFlow event `lexiflow_id` already in this calendar, found by the id
    /// LexiFlow writes into it (Google: `privateExtendedProperty`; Graph: a `$filter` on the
    /// single-value extended property), not deleted. A create that reached the provider and
    /// was never recorded (a crash, a lost answer), or a copy from an earlier connection to the
    /// same calendar, is found here instead of being made twice.
    pub async fn find(&self, lexiflow_id: uuid::Uuid) -> Result<Option<RemoteEvent>, SyncError> {
        let url = match self.provider {
            Provider::Google => format!(
                "{}?privateExtendedProperty={}&maxResults=10",
                self.events_url(),
                urlencode(&format!("lexiflowId={lexiflow_id}"))
            ),
            Provider::Microsoft => format!(
                "{}?$filter={}&$expand={}&$top=10",
                self.events_url(),
                urlencode(&format!(
                    "singleValueExtendedProperties/Any(ep: ep/id eq '{GRAPH_LEXIFLOW_ID}' and ep/value eq '{lexiflow_id}')"
                )),
                urlencode(&format!("singleValueExtendedProperties($filter=id eq '{GRAPH_LEXIFLOW_ID}')"))
            ),
        };
        let (status, _, json) = self.send(Method::GET, &url, None, None).await?;
        if !(200..300).contains(&status) {
            return Err(Self::fail(status, &json));
        }
        let items = match self.provider {
            Provider::Google => json.get("items"),
            Provider::Microsoft => json.get("value"),
        };
        // Only an event that does carry the id is taken, whatever the listing held: a provider
        // (or a proxy) that ignored the filter must not make LexiFlow overwrite another event.
        let want = lexiflow_id.to_string();
        let carries = |i: &Value| match self.provider {
            Provider::Google => {
                i.pointer("/extendedProperties/private/lexiflowId").and_then(Value::as_str) == Some(&want)
            }
            Provider::Microsoft => i
                .get("singleValueExtendedProperties")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|p| p.get("value").and_then(Value::as_str) == Some(&want)),
        };
        Ok(items
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|i| carries(i))
            .filter_map(|i| self.parse(i))
            .find(|r| !r.deleted))
    }

    /// Everything changed since `cursor` (everything, from a full listing, when None), and the
    /// cursor for next time. [`SyncError::CursorExpired`] when the provider no longer knows
    /// the cursor (Google's 410 on a `syncToken`, Graph's 410 on a delta link).
    pub async fn changes(&self, cursor: Option<&str>) -> Result<(Vec<RemoteEvent>, String), SyncError> {
        let mut url = match (self.provider, cursor) {
            // The same parameters as the full listing that gave the token, as Google asks.
            (Provider::Google, Some(token)) => format!(
                "{}?showDeleted=true&singleEvents=true&maxResults=250&syncToken={}",
                self.events_url(),
                urlencode(token)
            ),
            (Provider::Google, None) => {
                format!("{}?showDeleted=true&singleEvents=true&maxResults=250", self.events_url())
            }
            (Provider::Microsoft, Some(link)) => link.to_owned(),
            (Provider::Microsoft, None) => {
                let from = (Utc::now() - chrono::Duration::days(30)).format("%Y-%m-%dT%H:%M:%SZ");
                let to = (Utc::now() + chrono::Duration::days(730)).format("%Y-%m-%dT%H:%M:%SZ");
                format!("{}/me/calendarView/delta?startDateTime={from}&endDateTime={to}", self.base)
            }
        };
        // Graph's delta links must point at the configured API; anything else is refused.
        if self.provider == Provider::Microsoft && !url.starts_with(self.base) {
            return Err(SyncError::CursorExpired);
        }
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let (status, _, json) = self.send(Method::GET, &url, None, None).await?;
            if status == 410 {
                return Err(SyncError::CursorExpired);
            }
            if !(200..300).contains(&status) {
                return Err(Self::fail(status, &json));
            }
            let items = match self.provider {
                Provider::Google => json.get("items"),
                Provider::Microsoft => json.get("value"),
            };
            out.extend(items.and_then(Value::as_array).into_iter().flatten().filter_map(|i| self.parse(i)));
            match self.provider {
                Provider::Google => {
                    if let Some(next) = json.get("nextPageToken").and_then(Value::as_str) {
                        let base = url.split("&pageToken=").next().unwrap_or(&url).to_owned();
                        url = format!("{base}&pageToken={}", urlencode(next));
                        continue;
                    }
                    let token = json
                        .get("nextSyncToken")
                        .and_then(Value::as_str)
                        .ok_or_else(|| SyncError::Invalid("the last page has no nextSyncToken".into()))?;
                    return Ok((out, token.to_owned()));
                }
                Provider::Microsoft => {
                    if let Some(next) = json.get("@odata.nextLink").and_then(Value::as_str) {
                        if !next.starts_with(self.base) {
                            return Err(SyncError::Invalid(format!(
                                "a nextLink points outside the Graph API ({}): {next}",
                                self.base
                            )));
                        }
                        url = next.to_owned();
                        continue;
                    }
                    let link = json
                        .get("@odata.deltaLink")
                        .and_then(Value::as_str)
                        .ok_or_else(|| SyncError::Invalid("the last page has no deltaLink".into()))?;
                    return Ok((out, link.to_owned()));
                }
            }
        }
        Err(SyncError::Invalid(format!("more than {MAX_PAGES} pages of changes")))
    }

    fn body(&self, e: &Outgoing) -> Value {
        match self.provider {
            Provider::Google => {
                let when = |w: When| match w {
                    When::At(t) => {
                        json!({ "dateTime": t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "timeZone": e.time_zone })
                    }
                    When::Day(d) => json!({ "date": d.to_string() }),
                };
                json!({
                    "summary": e.title,
                    "description": e.description,
                    "location": e.location,
                    "start": when(e.start),
                    "end": when(e.end),
                    "attendees": e.attendees.iter().map(|(m, n)| json!({ "email": m, "displayName": n })).collect::<Vec<_>>(),
                    "reminders": {
                        "useDefault": false,
                        "overrides": e.reminders.iter().map(|m| json!({ "method": "popup", "minutes": m })).collect::<Vec<_>>(),
                    },
                    "extendedProperties": { "private": { "lexiflowId": e.lexiflow_id.to_string() } },
                })
            }
            Provider::Microsoft => {
                let all_day = matches!(e.start, When::Day(_));
                let when = |w: When| match w {
                    When::At(t) => json!({ "dateTime": t.format("%Y-%m-%dT%H:%M:%S").to_string(), "timeZone": "UTC" }),
                    When::Day(d) => json!({ "dateTime": format!("{d}T00:00:00"), "timeZone": "UTC" }),
                };
                // Graph keeps one reminder: the earliest.
                let reminder = e.reminders.iter().max().copied();
                json!({
                    "subject": e.title,
                    "body": { "contentType": "text", "content": e.description.clone().unwrap_or_default() },
                    "location": { "displayName": e.location.clone().unwrap_or_default() },
                    "start": when(e.start),
                    "end": when(e.end),
                    "isAllDay": all_day,
                    // No attendees: Graph mails a meeting request to each one when the event is
                    // created, and LexiFlow sends no mail on anyone's behalf.
                    "isReminderOn": reminder.is_some(),
                    "reminderMinutesBeforeStart": reminder.unwrap_or(0),
                    "singleValueExtendedProperties": [{
                        "id": GRAPH_LEXIFLOW_ID,
                        "value": e.lexiflow_id.to_string(),
                    }],
                })
            }
        }
    }

    fn parse(&self, v: &Value) -> Option<RemoteEvent> {
        let id = v.get("id").and_then(Value::as_str)?.to_owned();
        let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_owned).filter(|x| !x.is_empty());
        let time = |p: &str| {
            v.pointer(p)
                .and_then(Value::as_str)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        match self.provider {
            Provider::Google => {
                let when = |key: &str| {
                    let o = v.get(key)?;
                    if let Some(d) = o.get("date").and_then(Value::as_str) {
                        return NaiveDate::parse_from_str(d, "%Y-%m-%d").ok().map(When::Day);
                    }
                    o.get("dateTime")
                        .and_then(Value::as_str)
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| When::At(t.with_timezone(&Utc)))
                };
                Some(RemoteEvent {
                    id,
                    etag: s("/etag"),
                    updated: time("/updated"),
                    deleted: s("/status").as_deref() == Some("cancelled"),
                    title: s("/summary"),
                    description: s("/description"),
                    location: s("/location"),
                    start: when("start"),
                    end: when("end"),
                })
            }
            Provider::Microsoft => {
                let all_day = v.get("isAllDay").and_then(Value::as_bool).unwrap_or(false);
                let when = |key: &str| {
                    let t = v.pointer(&format!("/{key}/dateTime")).and_then(Value::as_str)?;
                    let t =
                        NaiveDateTime::parse_from_str(t.split('.').next().unwrap_or(t), "%Y-%m-%dT%H:%M:%S").ok()?;
                    Some(if all_day { When::Day(t.date()) } else { When::At(t.and_utc()) })
                };
                Some(RemoteEvent {
                    id,
                    etag: s("/@odata.etag"),
                    updated: time("/lastModifiedDateTime"),
                    deleted: v.get("@removed").is_some(),
                    title: s("/subject"),
                    description: s("/body/content"),
                    location: s("/location/displayName"),
                    start: when("start"),
                    end: when("end"),
                })
            }
        }
    }
}

/// Percent-encodes `s` for a path segment or a query value: spaces as `%20` (RFC 3986, as
/// Graph's documentation asks for `$filter`), not the form encoding's `+`. A `+` in the form
/// encoding's output is always a space (a literal `+` comes out as `%2B`).
fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}
