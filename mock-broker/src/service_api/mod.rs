//! DPS's service API (data plane, api-version `2021-10-01`) over HTTPS, on a listener of its
//! own: enrollments, enrollment groups and registration records, set up and read back the
//! way operators and the official service SDKs do it.
//!
//! `PUT/GET/DELETE /enrollments/{id}` and `/enrollmentGroups/{id}`, `POST .../query`,
//! `POST /enrollments` and `/enrollmentGroups` (bulk), `POST .../{id}/attestationmechanism`
//! (the keys), `GET/DELETE /registrations/{id}` and `POST /registrations/{groupId}/query`;
//! ETags with `If-Match` (412 when stale); the service SAS the SDKs send (`auth.rs`); DPS's
//! error shape. A write takes effect from the next registration.
//!
//! The requests are answered in `routes.rs`, with no IO; this module reads them off HTTP/1.1.

mod auth;
mod bulk;
mod routes;

use std::sync::Arc;
use std::time::SystemTime;

use ntex::SharedCfg;
use ntex::http::{self, Response, StatusCode};
use ntex::io::Filter;
use ntex::service::{ServiceFactory, chain_factory};

pub use auth::DEFAULT_POLICY_NAME;
pub(crate) use auth::ServicePolicy;

use crate::server::{ConnError, Shared};
use routes::{ApiRequest, ApiResponse, Service, error};

/// The largest request body the service API reads (a bulk operation of many enrollments).
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The HTTP/1.1 service answering the API, behind TLS.
pub(crate) fn service_api_server<F: Filter>(
    shared: Arc<Shared>,
    policy: Arc<ServicePolicy>,
) -> impl ServiceFactory<ntex::io::Io<F>, SharedCfg, Response = (), Error = ConnError, InitError = ()>
{
    let h1 = http::HttpService::h1(move |request: http::Request| {
        let shared = shared.clone();
        let policy = policy.clone();
        async move { Ok::<_, std::io::Error>(answer(request, &shared, &policy).await) }
    });
    chain_factory(h1)
        .map_err(|e| ConnError(format!("service API: {e:?}")))
        .map_init_err(|_| ())
}

async fn answer(mut request: http::Request, shared: &Shared, policy: &ServicePolicy) -> Response {
    let now = SystemTime::now();
    let mut payload = request.take_payload();
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let authorization = header("authorization");
    if let Err(why) = policy.check(authorization.as_deref(), crate::clock::unix_now()) {
        tracing::info!(why, "service API request refused");
        return respond(error(401, &format!("Unauthorized: {why}"), now));
    }
    let mut body = Vec::new();
    while let Some(chunk) = payload.recv().await {
        match chunk {
            Ok(chunk) if body.len() + chunk.len() <= MAX_BODY_BYTES => {
                body.extend_from_slice(&chunk)
            }
            Ok(_) => return respond(error(413, "the body is too large", now)),
            Err(e) => return respond(error(400, &format!("the body: {e}"), now)),
        }
    }
    let (if_match, continuation, max_items) = (
        header("if-match"),
        header("x-ms-continuation"),
        header("x-ms-max-item-count").and_then(|v| v.trim().parse().ok()),
    );
    let api_request = ApiRequest {
        method: request.method().as_str(),
        path: request.path(),
        if_match: if_match.as_deref(),
        max_items,
        continuation: continuation.as_deref(),
        body: &body,
    };
    let service = Service {
        enrollments: shared.dps.enrollments(),
        dps: &shared.dps,
    };
    respond(service.handle(&api_request, now))
}

fn respond(answer: ApiResponse) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::build(status);
    for (name, value) in &answer.headers {
        response.header(*name, value.as_str());
    }
    match answer.body {
        Some(body) => response
            .content_type("application/json; charset=utf-8")
            .body(body.to_string()),
        None => response.finish(),
    }
}

#[cfg(test)]
mod tests;
