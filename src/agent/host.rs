//! The host an agent flow runs on: its config, state dir and bootloader,
//! and the facts it tells about itself.

use crate::boot::{custom::CustomBackend, grub::GrubBackend, uboot::UbootBackend, Bootloader};
use crate::config::{BootloaderKind, Config};
use crate::error::{Error, Result};
use crate::fetch::{Transport, TransportOptions};
use crate::rollout::{self};
use crate::slot::{Device, SlotName};
use crate::state::{State, StateDir};
use crate::system;

/// An opened host: its config, state dir and bootloader.
pub struct Host {
    pub config: Config,
    pub state_dir: StateDir,
    pub boot: Box<dyn Bootloader>,
}

impl Host {
    pub fn open(config: Config) -> Result<Host> {
        let b = &config.bootloader;
        let boot: Box<dyn Bootloader> = match b.kind {
            BootloaderKind::Grub => Box::new(GrubBackend::new(b.grubenv.clone(), b.tries)),
            BootloaderKind::Uboot => Box::new(
                UbootBackend::new(b.fw_env_config.clone(), b.tries)?.with_good_tries(b.good_tries),
            ),
            BootloaderKind::Custom => {
                let script = b
                    .script
                    .clone()
                    .ok_or_else(|| Error::Refused("bootloader.script missing".into()))?;
                Box::new(CustomBackend::new(script))
            }
        };
        let state_dir = StateDir::new(&config.update.state_dir);
        Ok(Host {
            config,
            state_dir,
            boot,
        })
    }

    /// Which slot is running: the kernel command line, then the
    /// bootloader's own word, then the device of `/`.
    pub fn booted_slot(&self) -> Result<SlotName> {
        let cmdline_path = &self.config.system.cmdline;
        if let Some(cmdline) = system::read_fact(cmdline_path) {
            let named = system::booted_slot_from_cmdline(&cmdline)
                .map_err(|e| Error::Refused(format!("{}: {e}", cmdline_path.display())))?;
            if let Some(slot) = named {
                return Ok(slot);
            }
        }
        if let Some(slot) = self.boot.booted()? {
            return Ok(slot);
        }
        if let Some(root) = crate::slot::root_device() {
            // By storage, not device number: `/` may be a dm-verity or
            // loop device over the slot's partition.
            let sys = crate::slot::Sysfs::system();
            let mut slots = Vec::new();
            for slot in SlotName::ALL {
                for dev in self.config.slots[&slot].values() {
                    if let Ok(d) = Device::inspect(dev) {
                        slots.push((slot, d.storage(&sys)));
                    }
                }
            }
            if let Some(slot) = crate::slot::slot_holding(&sys.storage(root), &slots) {
                return Ok(slot);
            }
        }
        Err(Error::Refused(format!(
            "cannot tell which slot is booted: no abupdate.slot= or rauc.slot= in {} and / is on neither slot's devices",
            cmdline_path.display()
        )))
    }

    /// Version of the booted system: os-release, else what we installed there.
    pub fn booted_version(&self, state: &State, booted: SlotName) -> Option<String> {
        system::read_fact(&self.config.system.os_release)
            .and_then(|t| system::version_from_os_release(&t))
            .or_else(|| state.slot(booted).version)
    }

    /// This host's place in the fleet: the configured wariness, else the
    /// keyed hash of the machine id.
    pub fn position(&self) -> f64 {
        if let Some(w) = self.config.rollout.wariness {
            // Wariness 1.0 must still be inside a 100% rollout.
            return w.min(1.0 - f64::EPSILON);
        }
        let id = system::read_fact(&self.config.system.machine_id).unwrap_or_default();
        rollout::position(&id)
    }

    /// A stable id of this host for reports, not the machine id itself.
    pub fn host_id(&self) -> String {
        rollout::host_id(&system::read_fact(&self.config.system.machine_id).unwrap_or_default())
    }

    /// Where to fetch `url` from: through the site cache, when one is
    /// configured (signatures make any mirror as good as the origin); see
    /// [`crate::fetch::via_mirror`].
    pub fn via_mirror(&self, url: &str) -> String {
        match self.config.update.mirror.as_deref() {
            Some(mirror) => crate::fetch::via_mirror(url, mirror),
            None => url.to_string(),
        }
    }

    pub(super) fn boot_id(&self) -> Option<String> {
        system::read_fact(&self.config.system.boot_id).map(|s| s.trim().to_string())
    }

    pub(super) fn transport(&self) -> Result<Transport> {
        let u = &self.config.update;
        Ok(Transport::new(&TransportOptions {
            connect_timeout: u.connect_timeout,
            read_timeout: u.read_timeout,
            proxy: u.proxy.clone(),
            ca_file: u.ca_file.clone(),
            user_agent: format!("abupdate/{}", env!("CARGO_PKG_VERSION")),
        })?)
    }
}
