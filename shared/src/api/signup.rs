//! `POST /api/signup/callback` (its own function, so its latency and scaling are its own) and
//! `POST /api/signup-links`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};

use super::idempotency::{Replaying, ShowsLinkState};
use super::{ApiError, Caller, JsonBody, NumberView, shape};
use crate::domain::api_key::{KeyHash, bearer_key};
use crate::domain::lifecycle::Command;
use crate::domain::messages::{StepMessage, WabaSignupMessage};
use crate::domain::secrets::Secret;
use crate::domain::signup_link::LinkError;
use crate::domain::waba_signup::WabaSignup;
use crate::domain::{AccountId, Number, Onboarding, Status, Step, Timestamp, time};
use crate::lifecycle::{self, Changed};
use crate::ports::{
    ApiKeyVerifier, CreateOutcome, EventLog, LifecycleStore, MessageQueue, NumberReader,
    PhoneOwner, ProvisioningStore, SignupLinks, SignupSessions, WabaSignups,
};
use crate::secret_cache::LinkKeys;

pub struct CallbackState<S, Q> {
    pub store: S,
    pub queue: Q,
    pub signer: LinkKeys,
}

/// What the signup onboards, from the message Meta's flow ended with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignupMode {
    /// `FINISH`: a phone for the Cloud API.
    #[default]
    CloudApi,
    /// `FINISH_WHATSAPP_BUSINESS_APP_ONBOARDING`: a phone that stays on the Business app.
    Coexistence,
    /// `FINISH_ONLY_WABA`: a WABA and no phone; its phones are listed after the exchange.
    WabaOnly,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CallbackBody {
    code: String,
    waba_id: String,
    /// Absent exactly for a WABA-only signup.
    #[serde(default)]
    phone_number_id: Option<String>,
    #[serde(default)]
    state: Option<String>,
    /// Meta's business portfolio id (the FINISH message's `business_id`), as the hosted page
    /// sends it.
    #[serde(default)]
    business_id: Option<String>,
    /// `coexistence` for a signup that keeps the number on the WhatsApp Business app (the
    /// `FINISH_WHATSAPP_BUSINESS_APP_ONBOARDING` message), `waba_only` for `FINISH_ONLY_WABA`;
    /// `cloud_api` by default.
    #[serde(default)]
    mode: SignupMode,
}

fn meta_id(name: &str, value: &str) -> Result<(), ApiError> {
    if shape::is_meta_id(value) {
        Ok(())
    } else {
        Err(ApiError::invalid_request(format!(
            "{name} must be Meta's numeric id (digits only)"
        )))
    }
}

fn validate(body: &CallbackBody) -> Result<(), ApiError> {
    if !shape::is_signup_code(&body.code) {
        return Err(ApiError::invalid_request(
            "code must be the code FB.login returned (visible ASCII, no whitespace)",
        ));
    }
    meta_id("wabaId", &body.waba_id)?;
    if let Some(business) = &body.business_id {
        meta_id("businessId", business)?;
    }
    match (&body.phone_number_id, body.mode) {
        (Some(_), SignupMode::WabaOnly) => {
            return Err(ApiError::invalid_request(
                "a waba_only signup names no phone: phoneNumberId must be absent",
            ));
        }
        (None, SignupMode::CloudApi | SignupMode::Coexistence) => {
            return Err(ApiError::invalid_request(
                "phoneNumberId is required (only a waba_only signup has none)",
            ));
        }
        (Some(phone), _) => meta_id("phoneNumberId", phone)?,
        (None, SignupMode::WabaOnly) => {}
    }
    match &body.state {
        Some(state) if !shape::is_signup_state(state) => Err(ApiError::invalid_request(
            "state must be a signup link's state (v1.<payload>.<signature>)",
        )),
        _ => Ok(()),
    }
}

/// The account calling: an API key when one is sent, else a signup link's `state`.
async fn caller<S: ApiKeyVerifier>(
    store: &S,
    signer: &LinkKeys,
    headers: &HeaderMap,
    state: Option<&str>,
) -> Result<(AccountId, Option<String>), ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let key = value
            .to_str()
            .ok()
            .and_then(bearer_key)
            .ok_or_else(ApiError::unauthorized)?;
        let hash = KeyHash::of(key);
        let verified = store
            .verify_key(&hash)
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        super::note_use(store, &hash, &verified).await;
        let account = super::authorize(verified, &axum::http::Method::POST)?;
        return Ok((account, None));
    }
    let state = state.ok_or_else(ApiError::unauthorized)?;
    match signer.signer().await?.verify(state, time::now()) {
        Ok(link) => Ok((link.account_id, Some(link.link_id))),
        Err(LinkError::Expired) => Err(ApiError {
            message: "the signup link has expired".into(),
            ..ApiError::unauthorized()
        }),
        Err(LinkError::Invalid) => Err(ApiError {
            message: "the signup link is not valid".into(),
            ..ApiError::unauthorized()
        }),
    }
}

/// A callback for a phone a live number of this account holds already (another account's is a
/// new number that never holds the phone, see `callback`). A `PENDING` number: nothing restarts,
/// unless it never started (see [`restart_unstarted`]). An `ACTIVE` or `BANNED` number: a
/// reconnect with the new code (see `provisioning::reconnect`).
async fn existing<S, Q>(
    state: &CallbackState<S, Q>,
    owner: &PhoneOwner,
    account: &AccountId,
    link: Option<&str>,
    code: &str,
) -> Result<(StatusCode, Json<Value>), ApiError>
where
    S: NumberReader + ProvisioningStore + LifecycleStore + EventLog,
    Q: MessageQueue,
{
    let conflict = || ApiError::conflict("this phone number is already connected to an account");
    if &owner.account_id != account {
        return Err(conflict());
    }
    let number = state
        .store
        .get(account, &owner.number_id)
        .await?
        .ok_or_else(conflict)?;
    match number.status {
        Status::Pending => {
            restart_unstarted(state, &number, code).await?;
            Ok((
                StatusCode::OK,
                Json(json!({ "data": NumberView::from(&number) })),
            ))
        }
        status if status.is_reconnectable() => reconnect(state, number, link, code).await,
        _ => Err(ApiError::conflict(format!(
            "this phone number is {} in this account",
            number.status
        ))),
    }
}

/// A callback repeated for a number whose first message may never have gone out: the first
/// attempt wrote the number, then its send failed or its process died, and the client, seeing a
/// 5xx, tried again. Nothing else would start the number until the health sync's
/// `STARTLESS_AFTER`, long after Meta's code died; the repeat carries a fresh code, so it sends
/// the exchange's message itself. When the first send did go out after all (its answer lost),
/// the exchange runs twice: the copy sent here is marked `resent`, so it looks for the first
/// run's token before spending the code (and waits, rather than failing the number, when Meta
/// says the code was spent by that run), and the step's commit, conditioned on the version it
/// read, lets only one run move the number on. Of many concurrent repeats, the one holding the
/// restart lease sends (`true`); the others send nothing (`false`).
async fn restart_unstarted<S, Q>(
    state: &CallbackState<S, Q>,
    number: &Number,
    code: &str,
) -> Result<bool, ApiError>
where
    S: ProvisioningStore,
    Q: MessageQueue,
{
    if !number.is_unstarted() {
        return Ok(false);
    }
    let now = time::now();
    if !state
        .store
        .lease_restart(&number.account_id, &number.id, now, now + RESTART_LEASE)
        .await?
    {
        return Ok(false);
    }
    let mut message = StepMessage::new(
        number.id.clone(),
        number.account_id.clone(),
        Step::FIRST,
        format!("trc_{}", crate::domain::ids::random_id()),
    );
    message.code = Some(Secret::new(code));
    message.resent = true;
    state.queue.send(&message).await?;
    tracing::warn!(number_id = %number.id, "a repeated signup of a number that never started; its exchange is sent again");
    Ok(true)
}

/// How long one repeat holds the right to resend a never-started number's first message: long
/// enough for its send, short enough that a client retrying after that send failed (seconds
/// later) takes it again.
const RESTART_LEASE: chrono::Duration = chrono::Duration::seconds(5);

/// Starts a reconnect of `number` with the new `code` (`202`), consuming the signup link if
/// one came; a reconnect already under way is left to finish (`200`, nothing restarted).
async fn reconnect<S, Q>(
    state: &CallbackState<S, Q>,
    number: Number,
    link: Option<&str>,
    code: &str,
) -> Result<(StatusCode, Json<Value>), ApiError>
where
    S: NumberReader + ProvisioningStore + LifecycleStore + EventLog,
    Q: MessageQueue,
{
    if let Some(link) = link
        && !state
            .store
            .use_link(&number.account_id, link, &number.id)
            .await?
    {
        return Err(link_unusable());
    }
    let id = format!("rcn_{}", crate::domain::ids::random_id());
    let trace_id = format!("trc_{}", crate::domain::ids::random_id());
    let start = Command::StartReconnect { id: id.clone() };
    // The message goes out right after the write: a crash in between leaves a reconnect that
    // never runs, which a new signup replaces once it is stale (RECONNECT_STALE_MINUTES).
    let changed = lifecycle::apply(&state.store, &state.queue, &number, start).await?;
    match changed {
        Changed::Now(reconnecting) => {
            let mut message = StepMessage::reconnecting(
                reconnecting.id.clone(),
                reconnecting.account_id.clone(),
                Step::FIRST,
                trace_id,
                id.clone(),
            );
            message.code = Some(Secret::new(code));
            state.queue.send(&message).await?;
            tracing::info!(number_id = %reconnecting.id, reconnect_id = %id, "signup of a live number; reconnecting");
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({ "data": NumberView::from(&reconnecting) })),
            ))
        }
        Changed::Already(current) => {
            tracing::info!(number_id = %current.id, "a reconnect is already under way; nothing restarted");
            Ok((
                StatusCode::OK,
                Json(json!({ "data": NumberView::from(&current) })),
            ))
        }
        Changed::Refused(current, why) => Err(ApiError::conflict(format!(
            "this phone number is {} in this account: {why}",
            current.status
        ))),
    }
}

fn link_unusable() -> ApiError {
    ApiError {
        message: "the signup link was already used or has expired".into(),
        ..ApiError::unauthorized()
    }
}

/// A WABA-only signup (`FINISH_ONLY_WABA`): `202` with the signup; the exchange-token function
/// exchanges the code, lists the WABA's phones and creates their numbers.
async fn waba_only<S, Q>(
    state: &CallbackState<S, Q>,
    account: AccountId,
    link: Option<String>,
    body: &CallbackBody,
) -> Result<(StatusCode, Json<Value>), ApiError>
where
    S: WabaSignups,
    Q: MessageQueue,
{
    let signup = WabaSignup::new(account.clone(), body.waba_id.clone(), link, time::now());
    // Unlike a number's, this message goes out before the write: a crash in between leaves a
    // message about a signup that never existed, which the step drops, and the link unused for
    // a retry (written first, a crash would leave the link spent on a signup nothing lists).
    let mut message = WabaSignupMessage::new(
        signup.id.clone(),
        account,
        format!("trc_{}", crate::domain::ids::random_id()),
    );
    message.code = Some(Secret::new(body.code.as_str()));
    state.queue.send(&message).await?;
    if !state.store.create_waba_signup(&signup).await? {
        return Err(link_unusable());
    }
    tracing::info!(waba_signup_id = %signup.id, "WABA-only signup received; listing its phones");
    Ok((StatusCode::ACCEPTED, Json(json!({ "data": signup.view() }))))
}

pub async fn callback<S, Q>(
    State(state): State<Arc<CallbackState<S, Q>>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CallbackBody>,
) -> Result<(StatusCode, Json<Value>), ApiError>
where
    S: ApiKeyVerifier
        + NumberReader
        + ProvisioningStore
        + LifecycleStore
        + EventLog
        + WabaSignups
        + SignupSessions,
    Q: MessageQueue,
{
    let (account, link) =
        caller(&state.store, &state.signer, &headers, body.state.as_deref()).await?;
    validate(&body)?;
    let Some(phone_number_id) = body.phone_number_id.clone() else {
        return waba_only(&state, account, link, &body).await;
    };
    let onboarding = match body.mode {
        SignupMode::Coexistence => Onboarding::Coexistence,
        SignupMode::CloudApi | SignupMode::WabaOnly => Onboarding::CloudApi,
    };
    let mut number = Number::new_pending(
        account.clone(),
        body.waba_id.clone(),
        phone_number_id.clone(),
        time::now(),
    )
    .onboarded_as(onboarding);
    // A phone live in another account is answered as a new one: a number that holds no guard
    // and fails at its exchange, saying why only once the signup's token reads the phone. An
    // immediate 409 would confirm the phone to any key or link, before any proof of control.
    //
    // A signup link is single use whatever the phone: the transaction creating the number
    // consumes it, so with a link that transaction decides (a used state is refused even for a
    // phone already connected here). With a key, a phone already connected is answered at once.
    if link.is_none()
        && let Some(owner) = state.store.phone_owner(&phone_number_id).await?
    {
        if owner.account_id == account {
            return existing(&state, &owner, &account, None, &body.code).await;
        }
        number.phone_elsewhere = true;
    }
    let mut outcome = state.store.create_pending(&number, link.as_deref()).await?;
    if outcome == CreateOutcome::PhoneTaken {
        let owner = state
            .store
            .phone_owner(&phone_number_id)
            .await?
            .ok_or_else(|| ApiError::conflict("this phone number changed hands; try again"))?;
        if owner.account_id == account {
            return existing(&state, &owner, &account, link.as_deref(), &body.code).await;
        }
        number.phone_elsewhere = true;
        outcome = state.store.create_pending(&number, link.as_deref()).await?;
    }
    match outcome {
        CreateOutcome::Created => {
            // The first message goes out right after the write, so the exchange finds the
            // number on its first run and starts within Meta's ~30 s of the code. A crash in
            // between leaves a number at the exchange with no message: the health sync fails it
            // (`health::STARTLESS_AFTER`) through the exchange itself, which finds no code.
            let mut message = StepMessage::new(
                number.id.clone(),
                account.clone(),
                Step::FIRST,
                format!("trc_{}", crate::domain::ids::random_id()),
            );
            message.code = Some(Secret::new(body.code.as_str()));
            state.queue.send(&message).await?;
            tracing::info!(number_id = %number.id, phone_elsewhere = number.phone_elsewhere, "signup received; provisioning started");
            crate::metrics::signup(
                number.id.as_str(),
                crate::metrics::onboarding_name(number.onboarding),
            );
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({ "data": NumberView::from(&number) })),
            ))
        }
        CreateOutcome::PhoneTaken => {
            // A number holding no guard cannot find the phone taken.
            tracing::error!(number_id = %number.id, "a number without a phone guard found its phone taken");
            Err(ApiError::internal())
        }
        CreateOutcome::LinkUnusable => {
            // The same signup repeated (the hosted page's retry): the link created this phone's
            // number, which may never have started.
            if let Some(link) = link.as_deref()
                && let Some(number) =
                    created_by_link(&state.store, &account, link, &phone_number_id).await?
            {
                // A link authenticates one signup: only the repeat that resends the first
                // message may use it again; the rest are refused as any used link is.
                if restart_unstarted(&state, &number, &body.code).await? {
                    return Ok((
                        StatusCode::OK,
                        Json(json!({ "data": NumberView::from(&number) })),
                    ));
                }
            }
            Err(link_unusable())
        }
    }
}

/// The `PENDING` number of `account` for `phone_number_id` that `link` created, if any.
async fn created_by_link<S>(
    store: &S,
    account: &AccountId,
    link: &str,
    phone_number_id: &str,
) -> Result<Option<Number>, ApiError>
where
    S: NumberReader + SignupSessions,
{
    let Some(used_by) = store.link(link).await?.and_then(|l| l.number_id) else {
        return Ok(None);
    };
    Ok(store
        .get(account, &used_by)
        .await?
        .filter(|n| n.phone_number_id == phone_number_id && n.status == Status::Pending))
}

pub struct SignupLinkState<S> {
    pub store: S,
    pub signer: LinkKeys,
    pub base_url: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LinkRequest {
    #[serde(default)]
    redirect_url: Option<String>,
}

/// Issues a link (`201`). Its `state` is a bearer token: the answer is kept for a replay
/// without it (`ShowsLinkState`), and a replay signs the same state again from the kept link id
/// and expiry, issuing nothing.
pub async fn create_link<S: SignupLinks>(
    State(state): State<Arc<SignupLinkState<S>>>,
    Extension(Caller(account)): Extension<Caller>,
    replaying: Option<Extension<Replaying>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Extension<ShowsLinkState>, Json<Value>), ApiError> {
    let request: LinkRequest = if body.iter().all(u8::is_ascii_whitespace) {
        LinkRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid_request(format!("invalid JSON body: {e}")))?
    };
    if let Some(url) = &request.redirect_url
        && !shape::is_redirect_url(url)
    {
        return Err(ApiError::invalid_request(
            "redirectUrl must be an https URL",
        ));
    }
    let signer = state.signer.signer().await?;
    let (link_id, expires_at) = match replaying {
        Some(Extension(Replaying(kept))) => kept_link(&kept.body)?,
        None => {
            let now = time::now();
            let issued = signer.issue(&account, now);
            let link = crate::domain::signup_session::SignupSession::new(
                issued.link_id.clone(),
                account.clone(),
                now,
                issued.expires_at,
                request.redirect_url.clone(),
            );
            state.store.save_link(&link).await?;
            (issued.link_id, issued.expires_at)
        }
    };
    let link_state = signer.state(&account, &link_id, expires_at);
    let base_url = super::signup_page::link_base_url(&state.base_url, &headers);
    let mut query = vec![("state", link_state.as_str())];
    if let Some(url) = &request.redirect_url {
        query.push(("redirect_uri", url.as_str()));
    }
    let query = serde_urlencoded::to_string(&query).map_err(|_| ApiError::internal())?;
    let separator = if base_url.contains('?') { '&' } else { '?' };
    Ok((
        StatusCode::CREATED,
        Extension(ShowsLinkState),
        Json(json!({ "data": {
            "id": link_id,
            "url": format!("{base_url}{separator}{query}"),
            "state": link_state,
            "expiresAt": time::format(&expires_at),
        }})),
    ))
}

/// The link id and expiry of a kept `201` of [`create_link`].
fn kept_link(body: &[u8]) -> Result<(String, Timestamp), ApiError> {
    let answer: Value = serde_json::from_slice(body).map_err(|_| ApiError::internal())?;
    let data = &answer["data"];
    let link_id = data["id"].as_str().map(str::to_string);
    let expires_at = data["expiresAt"]
        .as_str()
        .and_then(|text| time::parse(text).ok());
    match (link_id, expires_at) {
        (Some(link_id), Some(expires_at)) => Ok((link_id, expires_at)),
        _ => {
            tracing::error!("a kept signup link answer without its id or expiry");
            Err(ApiError::internal())
        }
    }
}
