//! Control messages, received on [`streamhub_wire::CONTROL_CHANNEL`] in Redis and Redis Cluster
//! modes. A broker parses them ([`Control::parse`]) and hands them to its
//! broker handler (the hub), which carries them out.
//!
//! - `{"type": "drain", "reconnect_after_ms": N}`: stop taking connections and send every client
//!   `disconnect` (reason `server_drain`) with advice spread around N (rolling restarts);
//! - `{"type": "disconnect_client", "client_id": "..."}`: whichever instance holds that client
//!   sends it `disconnect` (reason `disconnected_by_operator`) and closes it.
//!
//! Owns nothing that lives: a control message is parsed by a broker and carried out by the hub.

use serde::Deserialize;
use uuid::Uuid;

/// One control message.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// Drain this instance.
    Drain {
        /// Centre of the reconnect advice (default: `shutdown.reconnect_after_ms`).
        #[serde(default)]
        reconnect_after_ms: Option<u64>,
    },
    /// Disconnect one client, wherever it is.
    DisconnectClient {
        /// The client's id.
        client_id: Uuid,
    },
}

impl Control {
    /// Parses one message of the control channel; `Err` says what is wrong with it.
    pub fn parse(payload: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(payload).map_err(|e| format!("bad control message: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_kinds() {
        let d = Control::parse(br#"{"type":"drain","reconnect_after_ms":7}"#).unwrap();
        assert_eq!(
            d,
            Control::Drain {
                reconnect_after_ms: Some(7)
            }
        );
        let id = Uuid::new_v4();
        let c = Control::parse(
            format!(r#"{{"type":"disconnect_client","client_id":"{id}"}}"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(c, Control::DisconnectClient { client_id: id });
        for bad in [
            &br#"{"type":"reboot"}"#[..],
            b"[]",
            br#"{"type":"disconnect_client","client_id":"x"}"#,
        ] {
            assert!(Control::parse(bad).is_err());
        }
    }
}
