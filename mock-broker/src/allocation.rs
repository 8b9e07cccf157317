//! Allocation: which hub DPS assigns a device to, among its enrollment's hubs, with no IO.
//!
//! `hashed` spreads devices evenly and stably (a registration id always lands on the same hub
//! while the hubs stay the same); `geoLatency` takes the nearest hub; `static` the one hub;
//! `custom` asks a webhook ([`crate::webhook`]), with the request built and the answer read
//! here.

use serde_json::{Value, json};

use crate::enrollment::{
    AllocationPolicy, CustomAllocationDefinition, LinkedHub, Matched, redacted_group,
    redacted_individual,
};

/// What allocation decided.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Allocation {
    /// This hub.
    Hub(String),
    /// Ask the webhook.
    Webhook(CustomAllocationDefinition),
    /// None of the enrollment's hubs can be used.
    NoHub(String),
}

/// FNV-1a: a hash that is the same in every run and on every platform, so a device lands on
/// the same hub each time.
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One of `hubs`, the same for `registration_id` every time, evenly spread over ids.
fn hashed<'a>(hubs: &'a [String], registration_id: &str) -> &'a String {
    let index = stable_hash(&registration_id.to_ascii_lowercase()) % hubs.len() as u64;
    &hubs[index as usize]
}

/// The hub `matched` assigns `registration_id` to, among `linked`.
pub(crate) fn allocate(
    matched: &Matched,
    linked: &[LinkedHub],
    registration_id: &str,
) -> Allocation {
    let settings = matched.settings();
    let hubs = settings.candidate_hubs(linked);
    let policy = settings
        .allocation_policy
        .unwrap_or(AllocationPolicy::Hashed);
    if policy == AllocationPolicy::Custom {
        return match &settings.custom_allocation_definition {
            Some(definition) => Allocation::Webhook(definition.clone()),
            None => Allocation::NoHub("a custom allocation without a webhook".into()),
        };
    }
    if hubs.is_empty() {
        return Allocation::NoHub("the enrollment has no IoT hub and none is linked".into());
    }
    let hub = match policy {
        AllocationPolicy::Static => &hubs[0],
        AllocationPolicy::Hashed | AllocationPolicy::Custom => hashed(&hubs, registration_id),
        AllocationPolicy::GeoLatency => {
            let latency = |hub: &String| {
                linked
                    .iter()
                    .find(|l| l.name.eq_ignore_ascii_case(hub))
                    .map_or(u32::MAX, |l| l.latency_ms)
            };
            let best = hubs.iter().map(latency).min().unwrap_or(u32::MAX);
            let nearest: Vec<String> = hubs
                .iter()
                .filter(|h| latency(h) == best)
                .cloned()
                .collect();
            return Allocation::Hub(hashed(&nearest, registration_id).clone());
        }
    };
    Allocation::Hub(hub.clone())
}

/// DPS's custom allocation request: the enrollment, what the device sent, and the hubs it
/// may go to.
pub(crate) fn webhook_request(
    matched: &Matched,
    linked: &[LinkedHub],
    registration_id: &str,
    current: Option<(&str, &str)>,
    x509: bool,
    payload: Option<&Value>,
) -> Value {
    let mut context = json!({ "registrationId": registration_id });
    if let Some((hub, device_id)) = current {
        context["currentIotHubHostName"] = hub.into();
        context["currentDeviceId"] = device_id.into();
    }
    if x509 {
        context["x509"] = json!({});
    } else {
        context["symmetricKey"] = json!({});
    }
    if let Some(payload) = payload {
        context["payload"] = payload.clone();
    }
    let mut request = json!({
        "deviceRuntimeContext": context,
        "linkedHubs": matched.settings().candidate_hubs(linked),
    });
    // The enrollment as the service shows it outside: without its keys and certificates.
    match matched {
        Matched::Individual(e) => {
            request["individualEnrollment"] = json!(redacted_individual(e.clone()));
        }
        Matched::Group(g) => request["enrollmentGroup"] = json!(redacted_group(g.clone())),
    }
    request
}

/// What a custom allocation webhook decided.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WebhookAnswer {
    pub(crate) hub: String,
    pub(crate) payload: Option<Value>,
}

/// Reads a webhook's answer as DPS does: `iotHubHostName` must be one of the hubs the request
/// offered, and a `payload`, if any, a JSON object.
pub(crate) fn read_webhook_answer(
    body: &[u8],
    offered: &[String],
) -> Result<WebhookAnswer, String> {
    let answer: Value = serde_json::from_slice(body)
        .map_err(|e| format!("the custom allocation answer is not JSON: {e}"))?;
    let hub = answer
        .get("iotHubHostName")
        .and_then(Value::as_str)
        .ok_or("the custom allocation answer has no iotHubHostName")?;
    if !offered.iter().any(|h| h.eq_ignore_ascii_case(hub)) {
        return Err(format!(
            "the custom allocation chose `{hub}`, which is not one of the enrollment's hubs"
        ));
    }
    let payload = answer.get("payload").filter(|p| !p.is_null()).cloned();
    if payload.as_ref().is_some_and(|p| !p.is_object()) {
        return Err("the custom allocation's payload is not a JSON object".into());
    }
    Ok(WebhookAnswer {
        hub: hub.to_owned(),
        payload,
    })
}

#[cfg(test)]
mod tests;
