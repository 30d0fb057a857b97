//! PC/SC access through pcscd and the `pcsc` crate: listing readers and talking to a card.
//! PC/SC handles are not `Send`: callers keep them on one thread.

use std::ffi::CString;

use super::CardError;
use super::apdu::Transport;

/// A reader as pcscd reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReaderInfo {
    /// The reader's name, as `[[desks]] reader` names it.
    pub name: String,
    /// Whether a card is present.
    pub card_present: bool,
    /// The card's ATR, when present.
    pub atr: Option<Vec<u8>>,
}

fn pcsc_error(what: &str) -> impl Fn(pcsc::Error) -> CardError + '_ {
    move |e| CardError::Transport(format!("{what}: {e}"))
}

/// Every reader pcscd knows, with card presence and ATR.
pub fn list_readers() -> Result<Vec<ReaderInfo>, CardError> {
    let context =
        pcsc::Context::establish(pcsc::Scope::User).map_err(pcsc_error("cannot reach pcscd"))?;
    let names = match context.list_readers_owned() {
        Ok(names) => names,
        Err(pcsc::Error::NoReadersAvailable) => return Ok(Vec::new()),
        Err(e) => return Err(pcsc_error("cannot list readers")(e)),
    };
    let mut states: Vec<pcsc::ReaderState> = names
        .iter()
        .map(|n| pcsc::ReaderState::new(n.clone(), pcsc::State::UNAWARE))
        .collect();
    context
        .get_status_change(std::time::Duration::ZERO, &mut states)
        .map_err(pcsc_error("cannot read reader states"))?;
    Ok(states
        .iter()
        .map(|state| {
            let present = state.event_state().contains(pcsc::State::PRESENT);
            ReaderInfo {
                name: state.name().to_string_lossy().into_owned(),
                card_present: present,
                atr: present.then(|| state.atr().to_vec()),
            }
        })
        .collect())
}

/// A connection to the card in one reader.
pub struct PcscCard {
    card: pcsc::Card,
}

impl PcscCard {
    /// Connects (shared mode, T=0 or T=1) to the card in `reader`.
    pub fn connect(reader: &str) -> Result<Self, CardError> {
        Self::connect_with(reader, pcsc::ShareMode::Shared)
    }

    /// Disconnects without resetting the card: a reading that must not undo another
    /// program's session (dropping the connection resets the card, which ends the
    /// PIN-verified state of every connection to it).
    pub fn leave(self) {
        let _ = self.card.disconnect(pcsc::Disposition::LeaveCard);
    }

    /// Runs `sequence` on the card inside a PC/SC transaction: no other connection's
    /// commands interleave with it (a login, a signature), and the card is left as it is
    /// when the transaction ends.
    pub fn in_transaction<R>(
        &mut self,
        sequence: impl FnOnce(&mut dyn Transport) -> Result<R, CardError>,
    ) -> Result<R, CardError> {
        let transaction = self
            .card
            .transaction()
            .map_err(pcsc_error("cannot start a card transaction"))?;
        let mut card = CardRef(&transaction);
        sequence(&mut card)
    }

    fn connect_with(reader: &str, mode: pcsc::ShareMode) -> Result<Self, CardError> {
        let context = pcsc::Context::establish(pcsc::Scope::User)
            .map_err(pcsc_error("cannot reach pcscd"))?;
        let name = CString::new(reader)
            .map_err(|_| CardError::Transport("reader name contains a NUL byte".into()))?;
        let card = context
            .connect(&name, mode, pcsc::Protocols::ANY)
            .map_err(|e| match e {
                pcsc::Error::NoSmartcard | pcsc::Error::RemovedCard => {
                    CardError::Transport(format!("no card in reader '{reader}'"))
                }
                pcsc::Error::SharingViolation => {
                    CardError::Transport(format!("the card in '{reader}' is busy (another login?)"))
                }
                pcsc::Error::UnknownReader => {
                    CardError::Transport(format!("no reader named '{reader}'"))
                }
                other => CardError::Transport(format!("cannot connect to '{reader}': {other}")),
            })?;
        Ok(Self { card })
    }
}

/// A card handle as a transport (the connection itself, or one transaction on it).
struct CardRef<'a>(&'a pcsc::Card);

impl Transport for CardRef<'_> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, CardError> {
        let mut buffer = vec![0u8; pcsc::MAX_BUFFER_SIZE_EXTENDED];
        self.0
            .transmit(apdu, &mut buffer)
            .map(<[u8]>::to_vec)
            .map_err(pcsc_error("card transmission failed"))
    }

    fn verify_pin_on_pad(&mut self, verify_structure: &[u8]) -> Result<Vec<u8>, CardError> {
        use super::pinpad::{FEATURE_VERIFY_PIN_DIRECT, GET_FEATURE_REQUEST, features};
        let no_pad = |why: String| CardError::PinPadUnavailable(why);
        let mut list = [0u8; 256];
        let list = self
            .0
            .control(pcsc::ctl_code(GET_FEATURE_REQUEST.into()), &[], &mut list)
            .map_err(|e| no_pad(format!("the reader lists no features ({e})")))?;
        let code = features(list, FEATURE_VERIFY_PIN_DIRECT)
            .ok_or_else(|| no_pad("the reader lacks FEATURE_VERIFY_PIN_DIRECT".into()))?;
        let mut answer = [0u8; 64];
        self.0
            .control(code.into(), verify_structure, &mut answer)
            .map(<[u8]>::to_vec)
            .map_err(pcsc_error("PIN-pad verification failed"))
    }
}

impl Transport for PcscCard {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, CardError> {
        CardRef(&self.card).transmit(apdu)
    }

    fn verify_pin_on_pad(&mut self, verify_structure: &[u8]) -> Result<Vec<u8>, CardError> {
        CardRef(&self.card).verify_pin_on_pad(verify_structure)
    }
}
