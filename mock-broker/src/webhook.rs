//! The custom allocation webhook: DPS posts its request to the URL an enrollment names and
//! assigns the device as the answer says. The request and the answer are built and read in
//! [`crate::allocation`]; this is the HTTP call, on the broker's runtime.
//!
//! DPS registers first and allocates after (the device polls `assigning` meanwhile), so a
//! webhook that is slow costs the device polls, never the broker a thread. A webhook that does
//! not answer within its timeout, answers with a status other than 200, or answers something
//! DPS cannot use fails the registration (status `failed`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::allocation::read_webhook_answer;
use crate::enrollment::Matched;
use crate::server::Shared;

/// How long a webhook has to answer unless the broker is told otherwise.
pub(crate) const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// The most custom allocations waiting for their webhook at once; more fail at once.
pub(crate) const MAX_WEBHOOK_CALLS: usize = 1024;

/// The largest answer read from a webhook.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// One custom allocation request to send.
#[derive(Debug, Clone)]
pub(crate) struct WebhookCall {
    /// The registration operation the answer decides.
    pub(crate) operation_id: String,
    pub(crate) registration_id: String,
    pub(crate) url: String,
    pub(crate) body: Value,
    /// The hubs the answer may choose from.
    pub(crate) offered: Vec<String>,
    pub(crate) timeout: Duration,
    /// The enrollment the device matched.
    pub(crate) matched: Matched,
}

/// Sends each call as it comes, until the broker stops.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    mut calls: tokio::sync::mpsc::Receiver<WebhookCall>,
) {
    let client = ntex::client::Client::new().await;
    while let Some(call) = calls.recv().await {
        let shared = shared.clone();
        let client = client.clone();
        ntex::rt::spawn(async move {
            let answer = ask(&client, &call).await;
            shared
                .dps
                .webhook_answered(&call, answer, SystemTime::now());
        });
    }
}

async fn ask(
    client: &ntex::client::Client,
    call: &WebhookCall,
) -> Result<crate::allocation::WebhookAnswer, String> {
    let millis = u32::try_from(call.timeout.as_millis()).unwrap_or(u32::MAX);
    let late = || format!("the webhook did not answer within {:?}", call.timeout);
    let exchange = async {
        let response = client
            .post(call.url.as_str())
            .timeout(ntex::time::Millis(millis))
            .send_json(&call.body)
            .await
            .map_err(|e| match e {
                ntex::client::error::ClientError::Timeout => late(),
                e => format!("the webhook could not be reached: {e}"),
            })?;
        let status = response.status();
        let body = response
            .body()
            .limit(MAX_ANSWER_BYTES)
            .await
            .map_err(|e| format!("the webhook's answer could not be read: {e}"))?;
        if status != ntex::http::StatusCode::OK {
            return Err(format!(
                "Custom allocation failed with status code: {}",
                status.as_u16()
            ));
        }
        read_webhook_answer(&body, &call.offered)
    };
    match ntex::time::timeout(ntex::time::Millis(millis), exchange).await {
        Ok(answer) => answer,
        Err(()) => Err(late()),
    }
}
