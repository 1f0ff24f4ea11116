//! The JSON configuration file: products, their devices and firmware, optional initial
//! tasks, and where to connect and listen.
//!
//! Contract. [`Config::load`] reads and checks the whole file before anything starts: keys
//! must make valid topics, firmware files must be readable, sign methods `md5` or `sha256`,
//! and `(productKey, version)` unique. Relative firmware paths are taken from the config
//! file's directory, so a config can sit next to its images.
//!
//! ```json
//! {
//!   "mqtt": "127.0.0.1:1883",
//!   "http": 0,
//!   "fileUrlStyle": "http",
//!   "products": [{
//!     "productKey": "pk1", "productSecret": "ps1",
//!     "devices": [{ "deviceKey": "dk1", "deviceSecret": "ds1" }],
//!     "firmwares": [
//!       { "version": "2.0.0", "path": "app-v2.bin", "signMethod": "md5" },
//!       { "version": "2.0.1", "path": "app-v2.bin", "cutAfter": 4096, "cuts": 2 },
//!       { "version": "2.0.2", "path": "app-v2.bin", "announceSign": "00112233445566778899aabbccddeeff" }
//!     ]
//!   }],
//!   "tasks": [{ "productKey": "pk1", "deviceKey": "dk1", "version": "2.0.0", "policy": "push" }]
//! }
//! ```

use std::path::{Path, PathBuf};

use otaweb::wire::enos::DeviceId;
use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// The broker as `HOST:PORT` (the `--mqtt` flag overrides it).
    #[serde(default = "default_mqtt")]
    pub mqtt: String,
    /// The HTTP port on 127.0.0.1; 0 picks a free one (the `--http` flag overrides it).
    #[serde(default)]
    pub http: u16,
    /// What `fileUrl` the sim puts in upgrade commands.
    #[serde(default)]
    pub file_url_style: FileUrlStyle,
    /// Seconds since a device's last message during which it counts as online for a push.
    #[serde(default = "default_online_window")]
    pub online_window_secs: u64,
    /// The products.
    pub products: Vec<ProductConfig>,
    /// Tasks created at start, as if posted to the admin API.
    #[serde(default)]
    pub tasks: Vec<TaskRequest>,
}

/// One product.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProductConfig {
    /// The product key.
    pub product_key: String,
    /// The product secret (recorded for completeness; the broker, not the sim, checks logins).
    #[serde(default)]
    pub product_secret: Option<String>,
    /// This product's `fileUrl` style, instead of the file's `fileUrlStyle`.
    #[serde(default)]
    pub file_url_style: Option<FileUrlStyle>,
    /// Its devices.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    /// Its firmware files.
    #[serde(default)]
    pub firmwares: Vec<FirmwareConfig>,
}

/// One device.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceConfig {
    /// The device key.
    pub device_key: String,
    /// The device secret, which signs the HTTP file-service login (A8).
    pub device_secret: String,
}

/// One firmware file of a product.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FirmwareConfig {
    /// The version, unique per product.
    pub version: String,
    /// The file, relative to the config file's directory unless absolute.
    pub path: PathBuf,
    /// `md5` (the console's only choice in 2019) or `sha256`.
    #[serde(default = "default_sign_method")]
    pub sign_method: String,
    /// Fault: the sign announced instead of the file's real one.
    #[serde(default)]
    pub announce_sign: Option<String>,
    /// Fault: the `fileSize` announced instead of the real size.
    #[serde(default)]
    pub announce_size: Option<u64>,
    /// Fault: cut the first [`FirmwareConfig::cuts`] body GETs after this many bytes.
    #[serde(default)]
    pub cut_after: Option<u64>,
    /// How many GETs `cutAfter` cuts (default 1; only with `cutAfter`).
    #[serde(default)]
    pub cuts: Option<u32>,
}

/// Which `fileUrl` upgrade commands carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileUrlStyle {
    /// A plain `http://127.0.0.1:PORT/files/{pk}/{version}` a browser can fetch directly.
    #[default]
    Http,
    /// An `enos-connect://ota/{pk}/{version}` URI, fetched through the file service's login
    /// and `multipart/.../file/download` (A8), as EnOS devices do.
    Enos,
}

/// How a task reaches its device (A9).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// The cloud pushes `upgrade`: now if the device is online, else at its next `inform`.
    #[default]
    Push,
    /// Nothing is pushed; `getversion` offers the firmware.
    Request,
}

/// A task to create: the admin API's POST body and the config's `tasks` entries.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskRequest {
    /// The device's product key.
    pub product_key: String,
    /// The device key.
    pub device_key: String,
    /// The firmware version to install (one of the product's firmwares).
    pub version: String,
    /// Push or upon device request.
    #[serde(default)]
    pub policy: Policy,
}

fn default_mqtt() -> String {
    "127.0.0.1:1883".to_string()
}

fn default_sign_method() -> String {
    "md5".to_string()
}

/// Three keepalives of the SDKs (60 s, A3): a device that went quiet longer is offline.
fn default_online_window() -> u64 {
    180
}

/// A firmware file read into memory, with what upgrade commands announce.
#[derive(Clone, Debug)]
pub struct LoadedFirmware {
    /// The product key.
    pub product_key: String,
    /// The version.
    pub version: String,
    /// `md5` or `sha256`.
    pub sign_method: String,
    /// Lowercase hex digest of the whole file, as the SDK samples compute it (A7).
    pub sign: String,
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// The sign upgrade commands announce: [`LoadedFirmware::sign`] unless `announceSign`.
    pub announced_sign: String,
    /// The `fileSize` upgrade commands announce: the real size unless `announceSize`.
    pub announced_size: u64,
    /// The configured dropped downloads, if any.
    pub cut: Option<Cut>,
}

/// Dropped downloads of one firmware (`cutAfter`, `cuts`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    /// The body bytes a cut GET still gets.
    pub after: u64,
    /// How many GETs are cut.
    pub times: u32,
}

impl Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut config: Config =
            serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for product in &mut config.products {
            for fw in &mut product.firmwares {
                if fw.path.is_relative() {
                    fw.path = dir.join(&fw.path);
                }
            }
        }
        config.check()?;
        Ok(config)
    }

    /// Checks keys, sign methods, `cuts` and version uniqueness (firmware files are read by
    /// [`Config::firmwares`]).
    pub fn check(&self) -> Result<(), String> {
        for product in &self.products {
            for device in &product.devices {
                DeviceId::new(product.product_key.as_str(), device.device_key.as_str())
                    .map_err(|e| format!("product {}: {e}", product.product_key))?;
            }
            for (i, fw) in product.firmwares.iter().enumerate() {
                if !matches!(
                    fw.sign_method.to_ascii_lowercase().as_str(),
                    "md5" | "sha256"
                ) {
                    return Err(format!(
                        "firmware {} of {}: signMethod must be md5 or sha256",
                        fw.version, product.product_key
                    ));
                }
                if fw.cuts.is_some() && fw.cut_after.is_none() {
                    return Err(format!(
                        "firmware {} of {}: cuts needs cutAfter",
                        fw.version, product.product_key
                    ));
                }
                if fw.cuts == Some(0) {
                    return Err(format!(
                        "firmware {} of {}: cuts must be at least 1 (leave out cutAfter for none)",
                        fw.version, product.product_key
                    ));
                }
                if product.firmwares[..i]
                    .iter()
                    .any(|f| f.version == fw.version)
                {
                    return Err(format!(
                        "firmware version {} appears twice in product {}",
                        fw.version, product.product_key
                    ));
                }
            }
        }
        Ok(())
    }

    /// Reads every firmware file, computes its sign and checks `cutAfter` against its size.
    pub fn firmwares(&self) -> Result<Vec<LoadedFirmware>, String> {
        let mut out = Vec::new();
        for product in &self.products {
            for fw in &product.firmwares {
                let bytes =
                    std::fs::read(&fw.path).map_err(|e| format!("{}: {e}", fw.path.display()))?;
                let sign_method = fw.sign_method.to_ascii_lowercase();
                let sign = if sign_method == "md5" {
                    otaweb::image::digest::to_hex(&otaweb::image::digest::md5(&bytes))
                } else {
                    otaweb::image::digest::to_hex(&otaweb::image::digest::sha256(&bytes))
                };
                let size = bytes.len() as u64;
                let cut = match fw.cut_after {
                    // A cut at or past the end would be a whole download: surely a typo.
                    Some(after) if after >= size => {
                        return Err(format!(
                        "firmware {} of {}: cutAfter {after} is not below the file's {size} bytes",
                        fw.version, product.product_key
                    ))
                    }
                    Some(after) => Some(Cut {
                        after,
                        times: fw.cuts.unwrap_or(1),
                    }),
                    None => None,
                };
                out.push(LoadedFirmware {
                    product_key: product.product_key.clone(),
                    version: fw.version.clone(),
                    sign_method,
                    announced_sign: fw.announce_sign.clone().unwrap_or_else(|| sign.clone()),
                    sign,
                    announced_size: fw.announce_size.unwrap_or(size),
                    bytes,
                    cut,
                });
            }
        }
        Ok(out)
    }
}
