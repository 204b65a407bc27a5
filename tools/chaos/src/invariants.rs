//! The invariants a settled system keeps, whatever faults it went through; each is reported
//! held or broken with the cases that break it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::Result;
use aws_sdk_dynamodb::types::AttributeValue;
use fake_meta::{Call, ChaosFault, Route};
use muchaw_shared::domain::{EventType, Status};
use serde_json::Value;

use crate::{Account, Kill, Signup, World};

#[derive(Clone, Debug)]
pub struct Invariant {
    pub name: &'static str,
    /// What was checked, in a few words (how many items).
    pub checked: String,
    /// The cases that break it (empty: held).
    pub broken: Vec<String>,
    /// Cases the chaos made permanent, each explained (they do not break it).
    pub explained: Vec<String>,
}

impl Invariant {
    pub fn held(&self) -> bool {
        self.broken.is_empty()
    }
}

pub struct Found {
    pub invariants: Vec<Invariant>,
    pub final_statuses: BTreeMap<String, u64>,
    pub numbers_lost: Vec<String>,
    pub duplicate_side_effects: Vec<String>,
    pub repeats_after_lost_answers: u64,
}

/// At most this many cases are listed per invariant (the count is always given).
const LISTED: usize = 20;

fn text(value: &Value, key: &str) -> String {
    value[key].as_str().unwrap_or_default().to_string()
}

pub async fn check(
    world: &World,
    accounts: &[Account],
    signups: &[Signup],
    kills: &[Kill],
) -> Result<Found> {
    let mut numbers: Vec<(usize, Value)> = Vec::new();
    for (index, account) in accounts.iter().enumerate() {
        for number in world.numbers(&account.key).await? {
            numbers.push((index, number));
        }
    }
    let mut invariants = Vec::new();
    let mut final_statuses = BTreeMap::new();
    for (_, number) in &numbers {
        *final_statuses.entry(text(number, "status")).or_insert(0) += 1;
    }

    // 1. Every number final: ACTIVE, FAILED with a reason, or DISCONNECTED.
    let mut broken = Vec::new();
    let mut explained = Vec::new();
    for (_, number) in &numbers {
        let status = text(number, "status");
        let id = text(number, "id");
        match status.as_str() {
            "ACTIVE" | "DISCONNECTED" => {}
            "FAILED" if number["failureReason"].is_object() => explained.push(format!(
                "{id} FAILED at {} ({} {})",
                number["failureReason"]["step"].as_str().unwrap_or("?"),
                number["failureReason"]["code"].as_str().unwrap_or("?"),
                number["failureReason"]["message"].as_str().unwrap_or("?"),
            )),
            _ => broken.push(format!("{id} is {status} ({})", number)),
        }
    }
    invariants.push(Invariant {
        name: "every number is ACTIVE, FAILED with a reason, or DISCONNECTED",
        checked: format!("{} numbers", numbers.len()),
        broken,
        explained,
    });

    // Every AWS request within its function's role in template.yaml.
    let denials = world.guards.authorizer.denials();
    invariants.push(Invariant {
        name: "no AWS request denied by its function's role in template.yaml",
        checked: "every AWS request of every function".to_string(),
        broken: denials
            .iter()
            .map(|d| {
                format!(
                    "{} {} on {} ({})",
                    d.function, d.permission.action, d.permission.resource, d.api_action
                )
            })
            .collect(),
        explained: Vec::new(),
    });

    // Numbers lost: a signup the API accepted whose number does not exist.
    let ids: BTreeSet<String> = numbers.iter().map(|(_, n)| text(n, "id")).collect();
    let numbers_lost: Vec<String> = signups
        .iter()
        .filter_map(|s| s.number_id.clone())
        .filter(|id| !ids.contains(id))
        .collect();
    invariants.push(Invariant {
        name: "no number lost (every accepted signup's number exists)",
        checked: format!(
            "{} accepted signups",
            signups.iter().filter(|s| s.number_id.is_some()).count()
        ),
        broken: numbers_lost
            .iter()
            .map(|id| format!("{id} was accepted and does not exist"))
            .collect(),
        explained: Vec::new(),
    });

    // 2. Per-status counters equal the real counts.
    let dynamodb = aws_sdk_dynamodb::Client::new(&world.sdk);
    let table = world.stack.table("NumbersTable")?.to_string();
    let mut broken = Vec::new();
    for (index, account) in accounts.iter().enumerate() {
        let item = dynamodb
            .get_item()
            .table_name(&table)
            .key("PK", AttributeValue::S(format!("ACCOUNT#{}", account.id)))
            .key("SK", AttributeValue::S("COUNTERS".into()))
            .consistent_read(true)
            .send()
            .await?
            .item
            .unwrap_or_default();
        for status in Status::ALL {
            let counted = item
                .get(status.as_str())
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0);
            let real = numbers
                .iter()
                .filter(|(a, n)| *a == index && n["status"] == status.as_str())
                .count() as i64;
            if counted != real {
                broken.push(format!(
                    "{}: counter {status} = {counted}, real count {real}",
                    account.id
                ));
            }
        }
    }
    invariants.push(Invariant {
        name: "the per-status counters equal the real counts",
        checked: format!(
            "{} accounts x {} statuses",
            accounts.len(),
            Status::ALL.len()
        ),
        broken,
        explained: Vec::new(),
    });

    // 3. At most one live number per phone.
    let mut live: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, number) in &numbers {
        let live_status = text(number, "status")
            .parse::<Status>()
            .is_ok_and(Status::is_live);
        if live_status {
            live.entry(text(number, "phoneNumberId"))
                .or_default()
                .push(text(number, "id"));
        }
    }
    invariants.push(Invariant {
        name: "at most one live number per phone",
        checked: format!("{} phones with a live number", live.len()),
        broken: live
            .iter()
            .filter(|(_, ids)| ids.len() > 1)
            .map(|(phone, ids)| format!("phone {phone}: {}", ids.join(", ")))
            .collect(),
        explained: Vec::new(),
    });

    // 4. No token secret left for a final (DISCONNECTED) number.
    let secrets = aws_sdk_secretsmanager::Client::new(&world.sdk);
    let mut names = BTreeSet::new();
    let mut next: Option<String> = None;
    loop {
        let page = secrets
            .list_secrets()
            .set_next_token(next.clone())
            .max_results(100)
            .send()
            .await?;
        for secret in page.secret_list() {
            if let Some(name) = secret.name() {
                names.insert(name.to_string());
            }
        }
        next = page.next_token().map(str::to_string);
        if next.is_none() {
            break;
        }
    }
    let disconnected: Vec<String> = numbers
        .iter()
        .filter(|(_, n)| n["status"] == "DISCONNECTED")
        .map(|(_, n)| text(n, "id"))
        .collect();
    invariants.push(Invariant {
        name: "no token secret left for a DISCONNECTED number",
        checked: format!(
            "{} disconnected numbers against {} secrets",
            disconnected.len(),
            names.len()
        ),
        broken: disconnected
            .iter()
            .filter(|id| names.iter().any(|name| name.ends_with(id.as_str())))
            .map(|id| format!("{id} still has its token secret"))
            .collect(),
        explained: Vec::new(),
    });

    // 5. Each endpoint received each event at least once; every repeat the same webhook-id.
    invariants.push(webhooks_invariant(world, accounts, &dynamodb, &table).await?);

    // 6. Meta side effects within the documented sequence and budget.
    let calls = world.meta.calls();
    let (meta, duplicate_side_effects, repeats_after_lost_answers) =
        meta_invariant(&calls, signups, kills);
    invariants.push(meta);

    // 7. No secret in any log line or response.
    invariants.push(secrets_invariant(world, accounts, signups, &calls));

    // 8. DLQs empty or holding only what the chaos made permanent, each explained.
    invariants.push(dead_letters_invariant(world).await?);

    Ok(Found {
        invariants,
        final_statuses,
        numbers_lost,
        duplicate_side_effects,
        repeats_after_lost_answers,
    })
}

async fn webhooks_invariant(
    world: &World,
    accounts: &[Account],
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<Invariant> {
    // The outbox: every event the system recorded.
    let mut events: Vec<(String, String, String, bool)> = Vec::new();
    let mut start: Option<HashMap<String, AttributeValue>> = None;
    loop {
        let page = dynamodb
            .scan()
            .table_name(table)
            .filter_expression("entity = :e")
            .expression_attribute_values(":e", AttributeValue::S("EVENT".into()))
            .set_exclusive_start_key(start.clone())
            .consistent_read(true)
            .send()
            .await?;
        for item in page.items() {
            let get = |name: &str| {
                item.get(name)
                    .and_then(|v| v.as_s().ok())
                    .cloned()
                    .unwrap_or_default()
            };
            let id = get("SK").strip_prefix("EVENT#").map(str::to_string);
            let id = id.unwrap_or_else(|| {
                get("PK")
                    .strip_prefix("EVENT#")
                    .unwrap_or_default()
                    .to_string()
            });
            events.push((
                id,
                get("accountId"),
                get("type"),
                item.contains_key("publishedAt"),
            ));
        }
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            break;
        }
    }
    let ours: BTreeMap<&str, &Account> = accounts.iter().map(|a| (a.id.as_str(), a)).collect();
    let received = world.customers.received();
    let mut delivered: BTreeSet<(String, String)> = BTreeSet::new();
    let mut bodies: BTreeMap<(String, String), BTreeSet<Vec<u8>>> = BTreeMap::new();
    let mut broken = Vec::new();
    for delivery in &received {
        let id = delivery
            .headers
            .get("webhook-id")
            .cloned()
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&delivery.body).unwrap_or(Value::Null);
        if body["id"].as_str() != Some(id.as_str()) {
            broken.push(format!(
                "a delivery's webhook-id {id} is not its event's id {}",
                body["id"]
            ));
        }
        if let Some(account) = ours.get(delivery.endpoint.as_str()) {
            let verified =
                signature_verifies(&account.endpoint_secret, &delivery.headers, &delivery.body);
            if !verified {
                broken.push(format!("delivery {id} to {} does not verify", account.id));
            }
        }
        bodies
            .entry((delivery.endpoint.clone(), id.clone()))
            .or_default()
            .insert(delivery.body.clone());
        if delivery.fault.is_none() {
            delivered.insert((delivery.endpoint.clone(), id));
        }
    }
    for ((endpoint, id), variants) in &bodies {
        if variants.len() > 1 {
            broken.push(format!(
                "{endpoint} got {} different bodies under webhook-id {id}",
                variants.len()
            ));
        }
    }
    let mut expected = 0;
    for (id, account_id, event_type, published) in &events {
        let Some(account) = ours.get(account_id.as_str()) else {
            continue;
        };
        // A history-only entry (`number.step_retried`) is never published, by design.
        let to_publish = serde_json::from_value::<EventType>(Value::String(event_type.clone()))
            .map_or(true, EventType::is_published);
        if !published && to_publish {
            broken.push(format!(
                "{event_type} {id} was never published from the outbox"
            ));
        }
        if !account.endpoint_events.iter().any(|e| e == event_type) {
            continue;
        }
        expected += 1;
        if !delivered.contains(&(account_id.clone(), id.clone())) {
            broken.push(format!(
                "{event_type} {id} never delivered to {account_id}'s endpoint"
            ));
        }
    }
    let repeats = received.len() as i64 - delivered.len() as i64;
    Ok(Invariant {
        name: "each endpoint received each event at least once; every repeat the same webhook-id",
        checked: format!(
            "{} events in the outbox, {expected} (event, endpoint) deliveries due, {} attempts received ({repeats} of them repeats or faulted)",
            events.len(),
            received.len()
        ),
        broken,
        explained: Vec::new(),
    })
}

/// Standard Webhooks' signature (`v1,` base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}`
/// with the secret after `whsec_`), checked after the run: the timestamp's freshness, which a
/// receiver checks on arrival, is not checked here.
fn signature_verifies(secret: &str, headers: &BTreeMap<String, String>, body: &[u8]) -> bool {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let engine = base64::engine::general_purpose::STANDARD;
    let Some(key) = secret
        .strip_prefix("whsec_")
        .and_then(|k| engine.decode(k).ok())
    else {
        return false;
    };
    let (Some(id), Some(timestamp), Some(signatures)) = (
        headers.get("webhook-id"),
        headers.get("webhook-timestamp"),
        headers.get("webhook-signature"),
    ) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(&key) else {
        return false;
    };
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = engine.encode(mac.finalize().into_bytes());
    signatures
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|s| s == expected)
}

/// The function whose steps make `route`'s side effects.
fn function_of(route: Route) -> Option<&'static str> {
    match route {
        Route::Register => Some("RegisterNumberFunction"),
        Route::SetPin => Some("ConfigurePinFunction"),
        _ => None,
    }
}

/// The phone's Graph calls up to `upto` (the last few), for a broken case to be diagnosed.
fn history(
    calls: &[Call],
    phone: &str,
    upto: u64,
    phone_of: impl Fn(&Call) -> Option<String>,
) -> String {
    let mine: Vec<String> = calls
        .iter()
        .filter(|c| c.seq <= upto && c.route.is_some() && phone_of(c).as_deref() == Some(phone))
        .map(|c| {
            let fault = c.chaos.map(|f| format!(" {f:?}")).unwrap_or_default();
            format!(
                "#{} {:?} {}{fault}",
                c.seq,
                c.route.unwrap_or(Route::GetPhone),
                c.status
            )
        })
        .collect();
    let start = mine.len().saturating_sub(8);
    mine[start..].join(", ")
}

/// Meta's documented sequence for a number: exchange, subscribe (its WABA), register, PIN,
/// profile; the register budget: 10 register/deregister requests per phone in 72 hours. A
/// register or PIN request sent again after an answered success is a duplicate side effect,
/// unless the answer died with its process: a SIGKILL of the function that makes it came in
/// between (at-least-once delivery then repeats it, which nothing can tell from a lost answer).
fn meta_invariant(
    calls: &[Call],
    signups: &[Signup],
    kills: &[Kill],
) -> (Invariant, Vec<String>, u64) {
    let crashed_between = |route: Route, after: u64, before: u64| {
        function_of(route).is_some_and(|function| {
            kills.iter().any(|k| {
                k.function == function && k.after_meta_call >= after && k.after_meta_call < before
            })
        })
    };
    let waba_of: BTreeMap<&str, &str> = signups
        .iter()
        .map(|s| (s.phone.as_str(), s.waba.as_str()))
        .collect();
    let phone_of = |call: &Call| -> Option<String> {
        let segments: Vec<&str> = call.path.trim_matches('/').split('/').collect();
        segments.get(1).map(|s| s.to_string())
    };
    let ok = |call: &Call| (200..300).contains(&call.status);
    // An answer the caller never got: a hang or a lost answer.
    let lost = |call: &Call| matches!(call.chaos, Some(ChaosFault::Hang | ChaosFault::AnswerLost));
    let mut broken = Vec::new();
    let mut duplicates = Vec::new();
    let mut repeats_after_lost = 0;
    let mut subscribed: BTreeSet<String> = BTreeSet::new();
    let mut registered: BTreeSet<String> = BTreeSet::new();
    let mut budget: BTreeMap<String, u64> = BTreeMap::new();
    // Per (route, phone): whether the last success was answered, and its seq, since the last
    // deregister.
    let mut done: HashMap<(Route, String), (bool, u64)> = HashMap::new();
    for call in calls {
        let Some(route) = call.route else { continue };
        let phone = phone_of(call).unwrap_or_default();
        match route {
            Route::SubscribeApp if ok(call) => {
                subscribed.insert(phone.clone());
            }
            Route::Register | Route::Deregister => {
                *budget.entry(phone.clone()).or_default() += 1;
            }
            _ => {}
        }
        if !ok(call) {
            continue;
        }
        match route {
            Route::Register => {
                let waba = waba_of.get(phone.as_str()).copied().unwrap_or_default();
                if !subscribed.contains(waba) {
                    broken.push(format!(
                        "phone {phone} registered before its WABA {waba} was subscribed"
                    ));
                }
                registered.insert(phone.clone());
            }
            Route::SetPin if !registered.contains(&phone) => {
                broken.push(format!(
                    "phone {phone}: PIN set before it was registered (its calls: {})",
                    history(calls, &phone, call.seq, phone_of)
                ));
            }
            Route::Deregister => {
                registered.remove(&phone);
                done.retain(|(_, p), _| *p != phone);
            }
            _ => {}
        }
        if matches!(route, Route::Register | Route::SetPin) {
            match done.get(&(route, phone.clone())) {
                Some(&(true, at)) if !crashed_between(route, at, call.seq) => {
                    duplicates.push(format!(
                        "{route:?} of phone {phone} again after an answered success (its calls: {})",
                        history(calls, &phone, call.seq, phone_of)
                    ))
                }
                Some(_) => repeats_after_lost += 1,
                None => {}
            }
            done.insert((route, phone.clone()), (!lost(call), call.seq));
        }
    }
    for (phone, count) in &budget {
        if *count > 10 {
            broken.push(format!(
                "phone {phone}: {count} register/deregister requests (Meta allows 10 in 72 h)"
            ));
        }
    }
    let invariant = Invariant {
        name: "Meta side effects within the documented sequence and budget",
        checked: format!(
            "{} Graph calls, {} phones registered or deregistered",
            calls.len(),
            budget.len()
        ),
        broken: broken
            .into_iter()
            .chain(duplicates.iter().cloned())
            .collect(),
        explained: Vec::new(),
    };
    (invariant, duplicates, repeats_after_lost)
}

fn secrets_invariant(
    world: &World,
    accounts: &[Account],
    signups: &[Signup],
    calls: &[Call],
) -> Invariant {
    let mut secrets: Vec<(String, String)> = Vec::new();
    for account in accounts {
        secrets.push(("API key".into(), account.key.clone()));
        secrets.push(("webhook secret".into(), account.endpoint_secret.clone()));
    }
    for token in world.meta.issued_tokens() {
        secrets.push(("Meta token".into(), token));
    }
    for signup in signups {
        secrets.push(("signup code".into(), signup.code.clone()));
    }
    secrets.push((
        "Meta app secret".into(),
        world.meta.app_secret().to_string(),
    ));
    secrets.push((
        "signup-link signing key".into(),
        crate::SIGNING_KEY.to_string(),
    ));
    secrets.retain(|(_, s)| s.len() >= 8);
    let pins: BTreeSet<String> = calls
        .iter()
        .filter(|c| c.route == Some(Route::SetPin))
        .filter_map(|c| c.body["pin"].as_str().map(str::to_string))
        .collect();
    let logs = world.logs.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let responses = world.client_responses();
    let webhook_bodies: Vec<String> = world
        .customers
        .received()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    // Looked up token by token (a secret is one token of the characters keys, tokens and
    // base64 use), so the scan costs the text's length, not its length times the secrets.
    let by_token: HashMap<&str, &str> = secrets
        .iter()
        .map(|(kind, secret)| (secret.trim_end_matches('='), kind.as_str()))
        .collect();
    let is_token_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '/');
    let mut broken = Vec::new();
    let mut scan = |place: &str, text: &str| {
        let mentions_pin = text.to_ascii_lowercase().contains("pin");
        for token in text.split(|c: char| !is_token_char(c)) {
            let token = token.trim_end_matches('=');
            if token.is_empty() {
                continue;
            }
            if let Some(kind) = by_token.get(token) {
                // A webhook endpoint's secret is shown once, in the answer creating it.
                if *kind == "webhook secret" && place == "response" && text.contains("\"secret\"") {
                    continue;
                }
                broken.push(format!("{kind} in a {place}: {}", shorten(text)));
            }
            if mentions_pin && pins.contains(token) {
                broken.push(format!("a PIN in a {place}: {}", shorten(text)));
            }
        }
    };
    for line in &logs {
        scan("log line", line);
    }
    for response in &responses {
        scan("response", response);
    }
    for body in &webhook_bodies {
        scan("webhook body", body);
    }
    Invariant {
        name: "no token, PIN, key or secret in any log line or response",
        checked: format!(
            "{} secrets and {} PINs against {} log lines, {} API responses, {} webhook bodies",
            secrets.len(),
            pins.len(),
            logs.len(),
            responses.len(),
            webhook_bodies.len()
        ),
        broken,
        explained: Vec::new(),
    }
}

fn shorten(text: &str) -> String {
    let cut: String = text.chars().take(160).collect();
    // The secret itself must not end up in the report either.
    format!(
        "{} chars starting {:?}",
        text.len(),
        cut.chars().take(40).collect::<String>()
    )
}

async fn dead_letters_invariant(world: &World) -> Result<Invariant> {
    let sqs = aws_sdk_sqs::Client::new(&world.sdk);
    let depths = world.queue_depths().await?;
    let mut broken = Vec::new();
    let mut explained = Vec::new();
    let mut dead_letter_queues = 0;
    for (id, depth) in &depths {
        if !id.contains("DeadLetter") {
            continue;
        }
        dead_letter_queues += 1;
        if *depth == 0 {
            continue;
        }
        let url = world.stack.queue_url(id)?;
        let messages = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .send()
            .await?
            .messages
            .unwrap_or_default();
        for message in messages {
            let body: Value =
                serde_json::from_str(message.body().unwrap_or_default()).unwrap_or(Value::Null);
            let case = format!("{id}: {}", shorten(message.body().unwrap_or_default()));
            // A delivery whose endpoint failed every attempt: the chaos made it permanent.
            if id.contains("WebhookDeliveries") && body["eventId"].is_string() {
                let event = body["eventId"].as_str().unwrap_or_default();
                let failed_attempts = world
                    .customers
                    .received()
                    .iter()
                    .filter(|r| r.headers.get("webhook-id").map(String::as_str) == Some(event))
                    .filter(|r| r.fault.is_some())
                    .count();
                explained.push(format!(
                    "{case}: delivery of {event} exhausted its attempts ({failed_attempts} faulted at the endpoint)"
                ));
            } else {
                broken.push(format!("{case} ({depth} messages)"));
            }
        }
    }
    Ok(Invariant {
        name: "DLQs empty or holding only what the chaos made permanent, each explained",
        checked: format!("{dead_letter_queues} dead-letter queues"),
        broken,
        explained,
    })
}

/// Cases beyond [`LISTED`] are counted, not listed.
pub fn listed(cases: &[String]) -> (Vec<&String>, usize) {
    let shown: Vec<&String> = cases.iter().take(LISTED).collect();
    let more = cases.len().saturating_sub(LISTED);
    (shown, more)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WABA: &str = "70000001";
    const PHONE: &str = "80000001";

    fn call(seq: u64, route: Route, path: &str) -> Call {
        Call {
            seq,
            route: Some(route),
            method: "POST".into(),
            path: path.into(),
            query: BTreeMap::new(),
            body: Value::Null,
            status: 200,
            authorization: None,
            chaos: None,
            asked_at: None,
            answered_at: None,
        }
    }

    /// One phone provisioned in Meta's order, then its PIN set again.
    fn pin_set_twice() -> Vec<Call> {
        vec![
            call(
                1,
                Route::SubscribeApp,
                &format!("/v25.0/{WABA}/subscribed_apps"),
            ),
            call(2, Route::Register, &format!("/v25.0/{PHONE}/register")),
            call(3, Route::SetPin, &format!("/v25.0/{PHONE}")),
            call(4, Route::SetPin, &format!("/v25.0/{PHONE}")),
        ]
    }

    fn signups() -> Vec<Signup> {
        vec![Signup {
            account: 0,
            waba: WABA.into(),
            phone: PHONE.into(),
            code: "code".into(),
            number_id: None,
        }]
    }

    #[test]
    fn a_pin_set_again_with_no_crash_in_between_is_a_duplicate_side_effect() {
        // Given a PIN set twice, both answered, nothing killed
        let (invariant, duplicates, necessary) = meta_invariant(&pin_set_twice(), &signups(), &[]);

        // Then the second is a duplicate, listed with the phone's calls
        assert_eq!(duplicates.len(), 1, "{duplicates:?}");
        assert!(duplicates[0].contains("#3 SetPin 200"), "{}", duplicates[0]);
        assert_eq!(necessary, 0);
        assert!(!invariant.held());
    }

    #[test]
    fn a_pin_set_again_after_its_function_was_killed_is_a_necessary_repeat() {
        // Given the PIN step's process killed after Meta answered the first PIN request
        let kills = [Kill {
            function: "ConfigurePinFunction".into(),
            after_meta_call: 3,
        }];

        let (invariant, duplicates, necessary) =
            meta_invariant(&pin_set_twice(), &signups(), &kills);

        // Then the repeat is necessary, not a duplicate
        assert!(duplicates.is_empty(), "{duplicates:?}");
        assert_eq!(necessary, 1);
        assert!(invariant.held(), "{:?}", invariant.broken);
    }

    #[test]
    fn a_kill_of_another_function_does_not_excuse_a_repeat() {
        let kills = [Kill {
            function: "RegisterNumberFunction".into(),
            after_meta_call: 3,
        }];

        let (_, duplicates, _) = meta_invariant(&pin_set_twice(), &signups(), &kills);

        assert_eq!(duplicates.len(), 1);
    }
}
