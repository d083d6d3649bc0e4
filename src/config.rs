//! Configuration in two steps: the TOML file as written ([`RawConfig`],
//! every table refusing unknown keys), then validated [`Settings`] that the
//! rest of the appliance uses. Errors name the key and say what is wrong.
//! The commented example is `docs/forecourt.example.toml`; keep them in step.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::link::can::CanSettings;
use crate::link::serial::{FlowControl, Parity, SerialSettings};
use crate::store::EngineKind;

/// A configuration the appliance refuses to start with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, or a value of the wrong type. toml's
    /// message names the key and shows the line.
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value of the right type that is not acceptable.
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub data_dir: PathBuf,
    #[serde(default)]
    pub http: RawHttp,
    #[serde(default)]
    pub serial: Vec<RawSerial>,
    #[serde(default)]
    pub can: Vec<RawCan>,
    pub sync: Option<RawSync>,
    #[serde(default)]
    pub consent: RawConsent,
    #[serde(default)]
    pub rules: RawRules,
    #[serde(default)]
    pub vehicles: RawVehicles,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub customers: RawCustomers,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    #[serde(default = "default_listen")]
    pub listen: String,
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            listen: default_listen(),
        }
    }
}

fn default_listen() -> String {
    "0.0.0.0:8080".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSerial {
    pub path: PathBuf,
    #[serde(default = "default_baud")]
    pub baud: u32,
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    #[serde(default = "default_parity")]
    pub parity: String,
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    #[serde(default = "default_flow_control")]
    pub flow_control: String,
}

fn default_baud() -> u32 {
    115_200
}
fn default_data_bits() -> u8 {
    8
}
fn default_parity() -> String {
    "none".into()
}
fn default_stop_bits() -> u8 {
    1
}
fn default_flow_control() -> String {
    "none".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCan {
    pub interface: String,
    /// Block size the appliance asks for in its Flow Control frames.
    #[serde(default)]
    pub block_size: u8,
    /// STmin (ms) the appliance asks for in its Flow Control frames.
    #[serde(default)]
    pub st_min_ms: u8,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSync {
    pub url: String,
    pub token: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsent {
    #[serde(default = "default_consent_brands")]
    pub brands: Vec<String>,
}

impl Default for RawConsent {
    fn default() -> Self {
        RawConsent {
            brands: default_consent_brands(),
        }
    }
}

fn default_consent_brands() -> Vec<String> {
    vec!["Volkswagen".into()]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRules {
    #[serde(default = "default_tick_s")]
    pub tick_s: u64,
}

impl Default for RawRules {
    fn default() -> Self {
        RawRules {
            tick_s: default_tick_s(),
        }
    }
}

fn default_tick_s() -> u64 {
    60
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVehicles {
    /// A vehicle is "on the lot" when its dongle was heard this recently.
    #[serde(default = "default_on_lot_minutes")]
    pub on_lot_minutes: u64,
}

impl Default for RawVehicles {
    fn default() -> Self {
        RawVehicles {
            on_lot_minutes: default_on_lot_minutes(),
        }
    }
}

fn default_on_lot_minutes() -> u64 {
    30
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCustomers {
    /// A sent invitation not answered within this many days expires (R-VEH-3).
    #[serde(default = "default_invitation_expiry_days")]
    pub invitation_expiry_days: u32,
}

impl Default for RawCustomers {
    fn default() -> Self {
        RawCustomers {
            invitation_expiry_days: default_invitation_expiry_days(),
        }
    }
}

fn default_invitation_expiry_days() -> u32 {
    14
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    #[serde(default = "default_engine")]
    pub engine: String,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            engine: default_engine(),
        }
    }
}

fn default_engine() -> String {
    "redb".into()
}

/// Validated settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub http_listen: SocketAddr,
    pub serial: Vec<SerialSettings>,
    pub can: Vec<CanSettings>,
    pub sync: Option<SyncSettings>,
    /// Brands whose vehicles need OBID consent before they are fully active.
    pub consent_brands: Vec<String>,
    /// Period of the time-driven rules.
    pub tick: Duration,
    pub on_lot_ms: u64,
    pub engine: EngineKind,
    /// Days after which a sent, unanswered invitation expires (R-VEH-3).
    pub invitation_expiry_days: u32,
}

#[derive(Clone, Debug)]
pub struct SyncSettings {
    pub url: String,
    pub token: String,
}

impl Settings {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Settings, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<config>"),
            message: e.to_string().trim_end().to_owned(),
        })?;
        Self::validate(raw)
    }

    /// Settings for the embedded demo and for tests: defaults everywhere.
    pub fn with_data_dir(data_dir: PathBuf) -> Settings {
        Settings {
            data_dir,
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            serial: Vec::new(),
            can: Vec::new(),
            sync: None,
            consent_brands: default_consent_brands(),
            tick: Duration::from_secs(default_tick_s()),
            on_lot_ms: default_on_lot_minutes() * 60_000,
            engine: EngineKind::Redb,
            invitation_expiry_days: default_invitation_expiry_days(),
        }
    }

    pub fn validate(raw: RawConfig) -> Result<Settings, ConfigError> {
        if raw.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        let http_listen: SocketAddr = raw.http.listen.parse().map_err(|_| {
            invalid(
                "http.listen",
                format!(
                    "{:?} is not an address:port such as \"0.0.0.0:8080\"",
                    raw.http.listen
                ),
            )
        })?;
        let mut serial = Vec::with_capacity(raw.serial.len());
        for (i, s) in raw.serial.into_iter().enumerate() {
            let key = |k: &str| format!("serial[{i}].{k}");
            if s.path.as_os_str().is_empty() {
                return Err(invalid(key("path"), "must not be empty"));
            }
            if !(50..=4_000_000).contains(&s.baud) {
                return Err(invalid(
                    key("baud"),
                    format!("{} is outside 50..=4000000", s.baud),
                ));
            }
            if !(5..=8).contains(&s.data_bits) {
                return Err(invalid(
                    key("data_bits"),
                    format!("{} is not 5, 6, 7 or 8", s.data_bits),
                ));
            }
            let parity = match s.parity.as_str() {
                "none" => Parity::None,
                "even" => Parity::Even,
                "odd" => Parity::Odd,
                other => {
                    return Err(invalid(
                        key("parity"),
                        format!("{other:?} is not \"none\", \"even\" or \"odd\""),
                    ))
                }
            };
            if !(1..=2).contains(&s.stop_bits) {
                return Err(invalid(
                    key("stop_bits"),
                    format!("{} is not 1 or 2", s.stop_bits),
                ));
            }
            let flow_control = match s.flow_control.as_str() {
                "none" => FlowControl::None,
                "hardware" => FlowControl::Hardware,
                "software" => FlowControl::Software,
                other => {
                    return Err(invalid(
                        key("flow_control"),
                        format!("{other:?} is not \"none\", \"hardware\" or \"software\""),
                    ))
                }
            };
            if serial.iter().any(|o: &SerialSettings| o.path == s.path) {
                return Err(invalid(
                    key("path"),
                    format!("{} is configured twice", s.path.display()),
                ));
            }
            serial.push(SerialSettings {
                path: s.path,
                baud: s.baud,
                data_bits: s.data_bits,
                parity,
                stop_bits: s.stop_bits,
                flow_control,
            });
        }
        let mut can = Vec::with_capacity(raw.can.len());
        for (i, c) in raw.can.into_iter().enumerate() {
            let key = format!("can[{i}].interface");
            // IFNAMSIZ is 16 including the terminating NUL.
            if c.interface.is_empty()
                || c.interface.len() > 15
                || c.interface.contains(['/', ' ', '\0'])
            {
                return Err(invalid(
                    key,
                    format!("{:?} is not a network interface name", c.interface),
                ));
            }
            if can.iter().any(|o: &CanSettings| o.interface == c.interface) {
                return Err(invalid(key, format!("{} is configured twice", c.interface)));
            }
            can.push(CanSettings {
                interface: c.interface,
                block_size: c.block_size,
                st_min_ms: c.st_min_ms,
            });
        }
        let sync = match raw.sync {
            None => None,
            Some(s) => {
                if !(s.url.starts_with("http://") || s.url.starts_with("https://")) {
                    return Err(invalid(
                        "sync.url",
                        format!("{:?} must start with http:// or https://", s.url),
                    ));
                }
                if s.token.trim().is_empty() {
                    return Err(invalid("sync.token", "must not be empty"));
                }
                Some(SyncSettings {
                    url: s.url,
                    token: s.token,
                })
            }
        };
        for (i, b) in raw.consent.brands.iter().enumerate() {
            if b.trim().is_empty() {
                return Err(invalid(format!("consent.brands[{i}]"), "must not be empty"));
            }
        }
        if raw.rules.tick_s == 0 || raw.rules.tick_s > 86_400 {
            return Err(invalid(
                "rules.tick_s",
                format!("{} is outside 1..=86400 seconds", raw.rules.tick_s),
            ));
        }
        if raw.vehicles.on_lot_minutes == 0 || raw.vehicles.on_lot_minutes > 7 * 24 * 60 {
            return Err(invalid(
                "vehicles.on_lot_minutes",
                format!(
                    "{} is outside 1..=10080 minutes",
                    raw.vehicles.on_lot_minutes
                ),
            ));
        }
        let expiry = raw.customers.invitation_expiry_days;
        if !(1..=365).contains(&expiry) {
            return Err(invalid(
                "customers.invitation_expiry_days",
                format!("{expiry} is outside 1..=365 days"),
            ));
        }
        let engine = match raw.store.engine.as_str() {
            "redb" => EngineKind::Redb,
            "sled" if cfg!(feature = "sled") => EngineKind::Sled,
            "sled" => {
                return Err(invalid(
                    "store.engine",
                    "\"sled\" needs a build with the `sled` cargo feature",
                ))
            }
            other => {
                return Err(invalid(
                    "store.engine",
                    format!("{other:?} is not \"redb\" or \"sled\""),
                ))
            }
        };
        Ok(Settings {
            data_dir: raw.data_dir,
            http_listen,
            serial,
            can,
            sync,
            consent_brands: raw.consent.brands,
            tick: Duration::from_secs(raw.rules.tick_s),
            on_lot_ms: raw.vehicles.on_lot_minutes * 60_000,
            engine,
            invitation_expiry_days: expiry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example_parses() {
        // SPEC.md, "Command line, config": the example as written.
        let s = Settings::parse(
            r#"
            data_dir = "/var/lib/forecourt"
            [http]
            listen = "0.0.0.0:8080"
            [[serial]]
            path = "/dev/ttyUSB0"
            baud = 115200
            [[can]]
            interface = "can0"
            [sync]
            url = "https://importer.example/api"
            token = "..."
            [consent]
            brands = ["Volkswagen"]
            [rules]
            tick_s = 60
            "#,
        )
        .unwrap();
        assert_eq!(s.serial.len(), 1);
        assert_eq!(s.serial[0].baud, 115_200);
        assert_eq!(s.can[0].interface, "can0");
        assert_eq!(s.tick, Duration::from_secs(60));
        assert_eq!(s.consent_brands, vec!["Volkswagen".to_string()]);
        assert_eq!(s.on_lot_ms, 30 * 60_000);
    }

    #[test]
    fn the_commented_example_config_parses() {
        let s = Settings::parse(include_str!("../docs/forecourt.example.toml")).unwrap();
        assert_eq!(s.serial.len(), 1);
        assert_eq!(s.can.len(), 1);
        assert_eq!(s.engine, EngineKind::Redb);
    }

    #[test]
    fn minimal_config_takes_defaults() {
        let s = Settings::parse("data_dir = \"/tmp/x\"").unwrap();
        assert_eq!(s.http_listen.to_string(), "0.0.0.0:8080");
        assert!(s.serial.is_empty() && s.can.is_empty() && s.sync.is_none());
        assert_eq!(s.consent_brands, vec!["Volkswagen".to_string()]);
        assert_eq!(s.invitation_expiry_days, 14);
        let s = Settings::parse("data_dir = \"/tmp/x\"\n[customers]\ninvitation_expiry_days = 30")
            .unwrap();
        assert_eq!(s.invitation_expiry_days, 30);
    }

    fn err(text: &str) -> String {
        Settings::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn unknown_keys_are_named() {
        assert!(err("data_dir = \"/x\"\ncolour = 1").contains("colour"));
        assert!(err("data_dir = \"/x\"\n[http]\nport = 1").contains("port"));
        assert!(
            err("data_dir = \"/x\"\n[[serial]]\npath = \"/dev/x\"\nbaudrate = 9600")
                .contains("baudrate")
        );
        assert!(err("data_dir = \"/x\"\n[rules]\ntick = 5").contains("tick"));
        assert!(err("data_dir = \"/x\"\n[customers]\nexpiry_days = 5").contains("expiry_days"));
    }

    #[test]
    fn bad_values_are_named() {
        assert!(err("").contains("data_dir"));
        assert!(err("data_dir = \"/x\"\n[http]\nlisten = \"8080\"").contains("http.listen"));
        assert!(
            err("data_dir = \"/x\"\n[[serial]]\npath = \"/dev/x\"\nbaud = \"fast\"")
                .contains("baud")
        );
        assert!(
            err("data_dir = \"/x\"\n[[serial]]\npath = \"/dev/x\"\nbaud = 0")
                .contains("serial[0].baud")
        );
        assert!(
            err("data_dir = \"/x\"\n[[serial]]\npath = \"/dev/x\"\nparity = \"mark\"")
                .contains("serial[0].parity")
        );
        assert!(err("data_dir = \"/x\"\n[[can]]\ninterface = \"\"").contains("can[0].interface"));
        assert!(err("data_dir = \"/x\"\n[rules]\ntick_s = 0").contains("rules.tick_s"));
        assert!(
            err("data_dir = \"/x\"\n[sync]\nurl = \"ftp://x\"\ntoken = \"t\"").contains("sync.url")
        );
        assert!(err("data_dir = \"/x\"\n[store]\nengine = \"lmdb\"").contains("store.engine"));
        assert!(
            err("data_dir = \"/x\"\n[customers]\ninvitation_expiry_days = 0")
                .contains("customers.invitation_expiry_days")
        );
        assert!(err(
            "data_dir = \"/x\"\n[[can]]\ninterface = \"can0\"\n[[can]]\ninterface = \"can0\""
        )
        .contains("configured twice"));
    }
}
