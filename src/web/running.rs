//! The flow an [`crate::web::Updater`] drives, whichever vendor protocol it speaks.
//!
//! Contract. [`Running`] forwards the [`Flow`] calls to the gadget or the DFU flow and turns
//! each flow's events into [`Note`]s, the one vocabulary the updater hands to JavaScript, so
//! the driver has no per-protocol code. Nothing here decides anything.

use crate::error::{Error, Misuse};
use crate::flow::dfu::{DfuEvent, DfuStage, DfuUpdate};
use crate::flow::gadget::{GadgetEvent, GadgetStage, GadgetUpdate};
use crate::flow::{Flow, Transmit};
use crate::time::Millis;
use alloc::vec::Vec;

/// One running update.
pub enum Running {
    /// Alexa Gadgets OTA.
    Gadget(GadgetUpdate),
    /// SiFli OTA-manager DFU.
    Dfu(DfuUpdate),
}

/// A flow event in the updater's vocabulary (see the table in [`crate::web::updater`]).
#[derive(Clone, Debug)]
pub enum Note {
    /// A new step, by its JavaScript name.
    Stage(&'static str),
    /// The device's firmware version and the offered one.
    Version {
        /// The device's version.
        current: u32,
        /// The image's version.
        offered: u32,
    },
    /// Bytes the device confirmed and bytes written so far.
    Progress {
        /// Confirmed bytes.
        confirmed: u64,
        /// Bytes handed to the link, at least the confirmed ones.
        sent: u64,
        /// All bytes.
        total: u64,
    },
    /// The flow needs the link back.
    NeedsReconnect,
    /// The device reboots into its updater (DFU's OTA manager).
    Rebooting,
    /// An interrupted update continues at this image and packet.
    Resuming {
        /// The image id.
        image: u8,
        /// Packets the device holds.
        packets: u32,
    },
    /// Finished: the device already runs this version or a newer one.
    UpToDate {
        /// The device's version.
        current: u32,
        /// The image's version.
        offered: u32,
    },
    /// Finished (a check): the device runs an older version than the image's.
    UpdateAvailable {
        /// The device's version.
        current: u32,
        /// The image's version.
        offered: u32,
    },
    /// The image is on the device, waiting for `apply()`.
    Staged {
        /// Confirmed bytes.
        confirmed: u64,
    },
    /// Finished: installed (with the version now running, where the protocol tells it).
    Done {
        /// The version now running.
        version: Option<u32>,
    },
    /// Finished: cancelled.
    Cancelled,
    /// Finished: failed.
    Failed(Error),
}

/// Calls `$call` on whichever flow runs.
macro_rules! each {
    ($self:expr, $f:ident => $call:expr) => {
        match $self {
            Running::Gadget($f) => $call,
            Running::Dfu($f) => $call,
        }
    };
}

impl Running {
    /// See [`Flow::handle_connected`].
    pub fn handle_connected(&mut self, now: Millis) {
        each!(self, f => f.handle_connected(now));
    }

    /// See [`Flow::handle_disconnected`].
    pub fn handle_disconnected(&mut self, now: Millis) {
        each!(self, f => f.handle_disconnected(now));
    }

    /// See [`Flow::handle_input`].
    pub fn handle_input(&mut self, now: Millis, bytes: &[u8]) {
        each!(self, f => f.handle_input(now, (), bytes));
    }

    /// See [`Flow::handle_timeout`].
    pub fn handle_timeout(&mut self, now: Millis) {
        each!(self, f => f.handle_timeout(now));
    }

    /// See [`Flow::handle_transmitted`].
    pub fn handle_transmitted(&mut self, now: Millis) {
        each!(self, f => f.handle_transmitted(now));
    }

    /// See [`Flow::poll_transmit`].
    pub fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> Option<Transmit<()>> {
        each!(self, f => f.poll_transmit(buf))
    }

    /// See [`Flow::poll_timeout`].
    pub fn poll_timeout(&self) -> Option<Millis> {
        each!(self, f => f.poll_timeout())
    }

    /// The next event, as a [`Note`].
    pub fn poll_note(&mut self) -> Option<Note> {
        match self {
            Running::Gadget(f) => f.poll_event().map(|e| gadget_note(e, f)),
            Running::Dfu(f) => f.poll_event().map(dfu_note),
        }
    }

    /// Whether the update ended.
    pub fn is_finished(&self) -> bool {
        each!(self, f => f.is_finished())
    }

    /// The current step's JavaScript name.
    pub fn stage(&self) -> Option<&'static str> {
        match self {
            Running::Gadget(f) => f.stage().map(gadget_stage),
            Running::Dfu(f) => f.stage().map(dfu_stage),
        }
    }

    /// Stops the update.
    pub fn cancel(&mut self, now: Millis) {
        each!(self, f => f.cancel(now));
    }

    /// Installs a staged image; only the gadget flow stages.
    pub fn apply(&mut self, now: Millis) -> Result<(), Misuse> {
        match self {
            Running::Gadget(f) => f.apply(now),
            Running::Dfu(_) => Err(Misuse::Unsupported(
                "a DFU update installs at its end; there is nothing to apply",
            )),
        }
    }
}

fn gadget_note(event: GadgetEvent, flow: &GadgetUpdate) -> Note {
    match event {
        GadgetEvent::Stage(s) => Note::Stage(gadget_stage(s)),
        GadgetEvent::VersionFound { current, offered } => Note::Version { current, offered },
        GadgetEvent::Progress { confirmed, total } => Note::Progress {
            confirmed,
            sent: confirmed,
            total,
        },
        GadgetEvent::Sent { sent, total } => {
            // A confirmation may have been handled since this was queued.
            let confirmed = flow.progress().0;
            Note::Progress {
                confirmed,
                sent: sent.max(confirmed),
                total,
            }
        }
        GadgetEvent::NeedsReconnect => Note::NeedsReconnect,
        GadgetEvent::UpToDate { current, offered } => Note::UpToDate { current, offered },
        GadgetEvent::UpdateAvailable { current, offered } => {
            Note::UpdateAvailable { current, offered }
        }
        GadgetEvent::Staged => Note::Staged {
            confirmed: flow.progress().0,
        },
        GadgetEvent::Done { version } => Note::Done {
            version: Some(version),
        },
        GadgetEvent::Cancelled => Note::Cancelled,
        GadgetEvent::Failed(e) => Note::Failed(e),
    }
}

fn dfu_note(event: DfuEvent) -> Note {
    match event {
        DfuEvent::Stage(s) => Note::Stage(dfu_stage(s)),
        DfuEvent::RebootingIntoUpdater => Note::Rebooting,
        DfuEvent::Resuming { image, packets } => Note::Resuming {
            image: image.0,
            packets,
        },
        DfuEvent::Progress { confirmed, total } => Note::Progress {
            confirmed,
            sent: confirmed,
            total,
        },
        DfuEvent::NeedsReconnect => Note::NeedsReconnect,
        DfuEvent::Done => Note::Done { version: None },
        DfuEvent::Cancelled => Note::Cancelled,
        DfuEvent::Failed(e) => Note::Failed(e),
    }
}

fn gadget_stage(stage: GadgetStage) -> &'static str {
    match stage {
        GadgetStage::Handshake => "handshake",
        GadgetStage::Discover => "discover",
        GadgetStage::Transfer => "transfer",
        GadgetStage::Apply => "apply",
        GadgetStage::Restart => "restart",
        GadgetStage::Confirm => "confirm",
    }
}

fn dfu_stage(stage: DfuStage) -> &'static str {
    match stage {
        DfuStage::Init => "init",
        DfuStage::Reboot => "reboot",
        DfuStage::Transfer => "transfer",
        DfuStage::Install => "install",
    }
}
