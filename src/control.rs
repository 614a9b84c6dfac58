//! Control messages, received on `aiops:control:streaming` in Redis mode:
//!
//! - `{"type": "drain", "reconnect_after_ms": N}`: stop taking connections and send every client
//!   `disconnect` (reason `server_drain`) with advice spread around N (rolling restarts);
//! - `{"type": "disconnect_client", "client_id": "..."}`: whichever instance holds that client
//!   sends it `disconnect` (reason `disconnected_by_operator`) and closes it.

use crate::hub::Hub;
use serde::Deserialize;

/// One control message.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Control {
    /// Drain this instance.
    Drain {
        /// Centre of the reconnect advice (default: `shutdown.reconnect_after_ms`).
        #[serde(default)]
        reconnect_after_ms: Option<u64>,
    },
    /// Disconnect one client, wherever it is.
    DisconnectClient {
        /// The client's id.
        client_id: String,
    },
}

/// Applies one control message; `Err` names what is wrong with it.
pub fn apply(hub: &Hub, payload: &[u8]) -> Result<(), String> {
    let msg: Control =
        serde_json::from_slice(payload).map_err(|e| format!("bad control message: {e}"))?;
    match msg {
        Control::Drain { reconnect_after_ms } => {
            let advice = reconnect_after_ms.unwrap_or(hub.config.shutdown.reconnect_after_ms);
            tracing::warn!(advice, "drain requested: disconnecting every client");
            hub.drain(advice);
        }
        Control::DisconnectClient { client_id } => {
            let id = uuid::Uuid::parse_str(&client_id)
                .map_err(|e| format!("bad client_id {client_id:?}: {e}"))?;
            if hub.disconnect_client(&id) {
                tracing::info!(%id, "client disconnected by control message");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_kinds() {
        let d: Control =
            serde_json::from_str(r#"{"type":"drain","reconnect_after_ms":7}"#).unwrap();
        assert_eq!(
            d,
            Control::Drain {
                reconnect_after_ms: Some(7)
            }
        );
        let c: Control =
            serde_json::from_str(r#"{"type":"disconnect_client","client_id":"x"}"#).unwrap();
        assert_eq!(
            c,
            Control::DisconnectClient {
                client_id: "x".into()
            }
        );
        assert!(serde_json::from_str::<Control>(r#"{"type":"reboot"}"#).is_err());
        assert!(serde_json::from_str::<Control>("[]").is_err());
    }
}
