//! Secure PIN entry on a PIN-pad reader (PC/SC v2 part 10, CCID `FEATURE_VERIFY_PIN_DIRECT`):
//! the gateway hands the reader a VERIFY template and the reader collects the digits on its
//! own keypad and inserts them, so the PIN never reaches software.
//!
//! - [`features`] reads the reader's answer to `CM_IOCTL_GET_FEATURE_REQUEST` (TLV list of
//!   feature tag → control code).
//! - [`VerifyTemplate`] is the `PIN_VERIFY_STRUCTURE` built from the card profile; it also
//!   parses one back, as a reader driver does (the emulator's PIN pad uses it).
//! - [`outcome`] maps the reader's two-byte answer: the card's status word, or the reader's
//!   own `6400` (timeout) / `6401` (cancelled) / `6B80` (template refused).
//!
//! Layout of `PIN_VERIFY_STRUCTURE` (little-endian multi-byte fields): bTimerOut,
//! bTimerOut2, bmFormatString, bmPINBlockString, bmPINLengthFormat, wPINMaxExtraDigit
//! (max, min), bEntryValidationCondition, bNumberMessage, wLangId, bMsgIndex,
//! `bTeoPrologue[3]`, ulDataLength, abData (the VERIFY APDU with a padded placeholder block).

use super::CardError;
use super::profile::CardProfile;

/// `FEATURE_VERIFY_PIN_DIRECT` tag in the feature list.
pub const FEATURE_VERIFY_PIN_DIRECT: u8 = 0x06;
/// Control code number of `CM_IOCTL_GET_FEATURE_REQUEST` (`SCARD_CTL_CODE(3400)`).
pub const GET_FEATURE_REQUEST: u32 = 3400;
/// Seconds the reader waits for the physician to type the PIN.
pub const ENTRY_TIMEOUT_SECS: u8 = 30;
/// Fixed part of `PIN_VERIFY_STRUCTURE` before abData.
const HEADER_LEN: usize = 19;
/// French (France), for readers that display prompts.
const LANG_FR: u16 = 0x040C;

/// The control code of `FEATURE_VERIFY_PIN_DIRECT` in a feature list, if the reader has it.
pub fn features(tlv: &[u8], wanted: u8) -> Option<u32> {
    let mut rest = tlv;
    while let [tag, len, tail @ ..] = rest {
        let len = usize::from(*len);
        let value = tail.get(..len)?;
        if *tag == wanted && len == 4 {
            return Some(u32::from_be_bytes([value[0], value[1], value[2], value[3]]));
        }
        rest = &tail[len..];
    }
    None
}

/// A VERIFY the reader completes with the digits typed on its keypad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyTemplate {
    /// Seconds to wait for entry.
    pub timeout_secs: u8,
    /// Byte offset of the PIN in the APDU's data field.
    pub pin_offset: usize,
    /// Size of the PIN block (the placeholder the digits overwrite).
    pub block_len: usize,
    /// Fewest and most digits accepted.
    pub digits: (u8, u8),
    /// The VERIFY APDU with its placeholder block.
    pub apdu: Vec<u8>,
}

impl VerifyTemplate {
    /// The template for `profile`: ASCII digits at the start of a block of
    /// `pin_block_length` bytes of `pin_padding`, 4 to 8 digits, validated by the OK key.
    pub fn for_profile(profile: &CardProfile) -> Result<Self, CardError> {
        let block_len = profile.pin_block_length.max(8);
        if block_len > 15 {
            return Err(CardError::Profile(
                "a PIN-pad block is at most 15 bytes".into(),
            ));
        }
        let mut apdu = vec![0x00, 0x20, 0x00, profile.pin_reference, block_len as u8];
        apdu.extend(std::iter::repeat_n(profile.pin_padding, block_len));
        Ok(Self {
            timeout_secs: ENTRY_TIMEOUT_SECS,
            pin_offset: 0,
            block_len,
            digits: (4, 8),
            apdu,
        })
    }

    /// The `PIN_VERIFY_STRUCTURE` bytes sent with `SCardControl`.
    pub fn encode(&self) -> Vec<u8> {
        // bmFormatString: bit 7 = offsets in bytes, bits 6-3 = PIN offset, bits 1-0 = ASCII.
        let format = 0x80 | ((self.pin_offset as u8 & 0x0F) << 3) | 0x02;
        let mut out = vec![
            self.timeout_secs,
            self.timeout_secs,
            format,
            self.block_len as u8, // bmPINBlockString: no length field, block size.
            0x00,                 // bmPINLengthFormat: no length field.
            self.digits.1,
            self.digits.0,
            0x02, // bEntryValidationCondition: validation key pressed.
            0x01, // bNumberMessage: one prompt.
        ];
        out.extend_from_slice(&LANG_FR.to_le_bytes());
        out.extend_from_slice(&[0x00, 0x00, 0x00, 0x00]); // bMsgIndex, bTeoPrologue.
        out.extend_from_slice(&(self.apdu.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.apdu);
        out
    }

    /// Reads a `PIN_VERIFY_STRUCTURE` as a reader driver does (ASCII PINs only).
    pub fn decode(bytes: &[u8]) -> Result<Self, CardError> {
        let bad = |why: &str| CardError::Malformed(format!("PIN verify structure: {why}"));
        let header = bytes.get(..HEADER_LEN).ok_or_else(|| bad("too short"))?;
        if header[2] & 0x03 != 0x02 {
            return Err(bad("only ASCII PIN format is supported"));
        }
        let length = u32::from_le_bytes([header[15], header[16], header[17], header[18]]);
        let apdu = &bytes[HEADER_LEN..];
        if usize::try_from(length).ok() != Some(apdu.len()) || apdu.len() < 5 {
            return Err(bad("ulDataLength does not match the APDU"));
        }
        let template = Self {
            timeout_secs: header[0],
            pin_offset: usize::from((header[2] >> 3) & 0x0F),
            block_len: usize::from(header[3] & 0x0F),
            digits: (header[6], header[5]),
            apdu: apdu.to_vec(),
        };
        if template.pin_offset + template.block_len > apdu.len() - 5 {
            return Err(bad("the PIN block lies outside the APDU data"));
        }
        Ok(template)
    }

    /// The APDU the reader sends once `typed` (ASCII digits) was entered; `None` when the
    /// entry is outside the accepted number of digits.
    pub fn complete(&self, typed: &[u8]) -> Option<Vec<u8>> {
        let count = u8::try_from(typed.len()).ok()?;
        if count < self.digits.0 || count > self.digits.1 || typed.len() > self.block_len {
            return None;
        }
        let mut apdu = self.apdu.clone();
        let start = 5 + self.pin_offset;
        apdu[start..start + typed.len()].copy_from_slice(typed);
        Some(apdu)
    }
}

/// The reader's answer to a PIN-pad VERIFY: `Ok` when the card accepted the PIN.
pub fn outcome(answer: &[u8]) -> Result<(), CardError> {
    let [sw1, sw2] = answer else {
        return Err(CardError::Malformed(format!(
            "PIN-pad answer of {} bytes, expected 2",
            answer.len()
        )));
    };
    match u16::from_be_bytes([*sw1, *sw2]) {
        0x6400 => Err(CardError::PinPadTimeout),
        0x6401 => Err(CardError::PinPadCancelled),
        0x6B80 => Err(CardError::PinPadUnavailable(
            "the reader refused the PIN verify template".into(),
        )),
        // As for a PIN typed at the keyboard (profile::verify_pin).
        0x6300 => Err(CardError::WrongPinTriesUnknown),
        sw => super::apdu::check_status(sw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cps3_template_encodes_and_decodes_as_a_driver_reads_it() {
        let template = VerifyTemplate::for_profile(&CardProfile::default()).unwrap();
        let bytes = template.encode();
        assert_eq!(
            bytes[..HEADER_LEN],
            [
                30, 30, 0x82, 0x08, 0x00, 8, 4, 0x02, 0x01, 0x0C, 0x04, 0, 0, 0, 0, 13, 0, 0, 0
            ]
        );
        assert_eq!(
            bytes[HEADER_LEN..],
            [
                0x00, 0x20, 0x00, 0x01, 0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF
            ]
        );
        assert_eq!(VerifyTemplate::decode(&bytes).unwrap(), template);
        assert_eq!(
            template.complete(b"1234").unwrap()[5..],
            [b'1', b'2', b'3', b'4', 0xFF, 0xFF, 0xFF, 0xFF]
        );
        assert!(template.complete(b"123").is_none());
        assert!(template.complete(b"123456789").is_none());
    }

    #[test]
    fn feature_lists_are_read_without_trusting_lengths() {
        let tlv = [
            0x0A, 4, 0x42, 0, 0x0D, 0x48, 0x06, 4, 0x42, 0x33, 0x00, 0x06,
        ];
        assert_eq!(features(&tlv, FEATURE_VERIFY_PIN_DIRECT), Some(0x4233_0006));
        assert_eq!(features(&tlv[..4], FEATURE_VERIFY_PIN_DIRECT), None);
        assert_eq!(features(&[0x06, 200, 1], FEATURE_VERIFY_PIN_DIRECT), None);
        assert_eq!(features(&[], FEATURE_VERIFY_PIN_DIRECT), None);
    }

    #[test]
    fn reader_answers_map_to_typed_outcomes() {
        assert_eq!(outcome(&[0x90, 0x00]), Ok(()));
        assert_eq!(
            outcome(&[0x63, 0xC2]),
            Err(CardError::WrongPin { tries_left: 2 })
        );
        assert_eq!(outcome(&[0x69, 0x83]), Err(CardError::PinBlocked));
        assert_eq!(outcome(&[0x63, 0xC0]), Err(CardError::PinBlocked));
        assert_eq!(outcome(&[0x63, 0x00]), Err(CardError::WrongPinTriesUnknown));
        assert_eq!(outcome(&[0x64, 0x00]), Err(CardError::PinPadTimeout));
        assert_eq!(outcome(&[0x64, 0x01]), Err(CardError::PinPadCancelled));
        assert!(matches!(outcome(&[0x90]), Err(CardError::Malformed(_))));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_structures_and_feature_lists_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            typed in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20),
        ) {
            let _ = features(&bytes, FEATURE_VERIFY_PIN_DIRECT);
            let _ = outcome(&bytes);
            if let Ok(template) = VerifyTemplate::decode(&bytes) {
                let _ = template.complete(&typed);
            }
        }
    }
}
