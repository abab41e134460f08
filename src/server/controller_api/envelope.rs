//! Envelope (key 58, KIP-590): a client's topic or config change that a broker forwards
//! with the client's principal and address. The request inside is served by its own
//! handler here, as if the client had sent it, and its response goes back inside the
//! envelope's. A bad principal gets PRINCIPAL_DESERIALIZATION_FAILURE; a bad address, an
//! API that is not forwarded this way or a request that does not decode get
//! INVALID_REQUEST, in the envelope's error code, with the connection kept.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiKey, EnvelopeRequest};
use kafka_protocol::ResponseError;
use tracing::{debug, info, warn};

use super::{supported, Call};
use crate::controller::Controller;
use crate::protocol::envelope::{self, Opened};
use crate::server::api::{encode_frame, Reply};

/// Who sent which API through an envelope, and when that was last logged.
type LogKey = (String, String, ApiKey);

thread_local! {
    static LOGGED: RefCell<HashMap<LogKey, Instant>> = RefCell::new(HashMap::new());
}

/// Whether `key` was not logged in the last `window`: a client retrying auto-creation with
/// every Metadata request is logged once per window, not at each retry.
fn first_in_window(key: LogKey, window: Duration) -> bool {
    let now = Instant::now();
    LOGGED.with(|logged| {
        let mut logged = logged.borrow_mut();
        logged.retain(|_, at| now.duration_since(*at) < window);
        if logged.contains_key(&key) {
            return false;
        }
        logged.insert(key, now);
        true
    })
}

pub async fn handle(controller: &Rc<Controller>, call: &Call, request: EnvelopeRequest) -> Reply {
    let answer = match envelope::open_request(request, |api| supported(api).map(|a| (a.min, a.max))) {
        Ok(opened) => serve(controller, opened).await,
        Err(e) => {
            debug!(error = %e, "refused an envelope");
            Err(e.code())
        }
    };
    encode_frame(ApiKey::Envelope, call.version, call.correlation_id, &envelope::response(answer))
}

/// Serves the forwarded request with its own handler; its response frame without the size
/// prefix, which is what the envelope carries.
async fn serve(controller: &Rc<Controller>, opened: Opened) -> Result<bytes::Bytes, ResponseError> {
    let Opened { origin, api, version, body } = opened;
    let entry = supported(api).ok_or(ResponseError::InvalidRequest)?;
    let inner = Call { api, version, correlation_id: origin.correlation_id };
    let principal = format!("{}:{}", origin.principal_type, origin.principal_name);
    let reply = (entry.handler)(controller, &inner, body).await;
    match reply {
        Ok(Reply::Frame(frame)) => {
            let window = Duration::from_millis(controller.config().log_rate_limit_window_ms);
            if first_in_window((principal.clone(), origin.client_id.clone(), api), window) {
                info!(
                    ?api,
                    version,
                    %principal,
                    client_host = %origin.host,
                    client_id = %origin.client_id,
                    correlation_id = origin.correlation_id,
                    "served a forwarded request"
                );
            } else {
                debug!(?api, %principal, client_id = %origin.client_id, "served a forwarded request");
            }
            Ok(frame.freeze().split_off(4))
        }
        // No forwardable API answers in parts or not at all.
        Ok(Reply::Parts(_) | Reply::Nothing) => Err(ResponseError::UnknownServerError),
        Ok(Reply::Close(reason)) => {
            warn!(?api, %principal, %reason, "cannot answer a forwarded request");
            Err(ResponseError::UnknownServerError)
        }
        Err(e) => {
            debug!(?api, %principal, error = %e, "refused a forwarded request");
            Err(ResponseError::InvalidRequest)
        }
    }
}
