//! The protobuf wire format read in place: a message as a sequence of
//! `(field number, value)` with length-delimited values borrowed from the
//! body. Counting records before decoding ([`crate::wire_count`]) and
//! converting spans without decoding them into structs first
//! ([`crate::convert::traces`]) both walk messages this way.

/// One field's value as the wire format carries it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    /// Strings, bytes, embedded messages and packed repeated scalars.
    Bytes(&'a [u8]),
}

/// The body is not well-formed protobuf: a truncated field, a varint over
/// ten bytes, a length past the end, or a wire type this reader does not
/// read (the deprecated groups, or an unassigned one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// The fields of one message, in wire order.
pub struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    pub fn new(message: &'a [u8]) -> Self {
        Fields { rest: message }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if n > self.rest.len() {
            return Err(Malformed);
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    fn field(&mut self) -> Result<(u32, Value<'a>), Malformed> {
        // As prost reads keys: they fit 32 bits, and field 0 is invalid.
        let key = u32::try_from(varint(&mut self.rest)?).map_err(|_| Malformed)?;
        let field = key >> 3;
        if field == 0 {
            return Err(Malformed);
        }
        let value = match key & 7 {
            0 => Value::Varint(varint(&mut self.rest)?),
            1 => Value::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().map_err(|_| Malformed)?,
            )),
            2 => {
                let len = usize::try_from(varint(&mut self.rest)?).map_err(|_| Malformed)?;
                Value::Bytes(self.take(len)?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(
                self.take(4)?.try_into().map_err(|_| Malformed)?,
            )),
            _ => return Err(Malformed),
        };
        Ok((field, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let field = self.field();
        if field.is_err() {
            // Nothing after a malformed field can be read.
            self.rest = &[];
        }
        Some(field)
    }
}

/// A base-128 varint, as protobuf writes every integer that is not fixed;
/// like prost, one whose tenth byte carries more than the 64th bit is
/// refused.
pub fn varint(bytes: &mut &[u8]) -> Result<u64, Malformed> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first().ok_or(Malformed)?;
        *bytes = rest;
        if shift == 63 && byte > 1 {
            return Err(Malformed);
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_wire_type_and_refuses_truncation() {
        // field 1 varint 150, field 2 fixed64 1, field 3 "hi", field 4 fixed32 7
        let mut body = vec![0x08, 0x96, 0x01, 0x11];
        body.extend(1u64.to_le_bytes());
        body.extend([0x1a, 2, b'h', b'i', 0x25]);
        body.extend(7u32.to_le_bytes());
        let fields: Vec<_> = Fields::new(&body).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            fields,
            vec![
                (1, Value::Varint(150)),
                (2, Value::Fixed64(1)),
                (3, Value::Bytes(b"hi")),
                (4, Value::Fixed32(7)),
            ]
        );
        // Cut anywhere but between fields.
        for cut in (1..body.len()).filter(|c| ![3, 12, 16].contains(c)) {
            let read: Result<Vec<_>, _> = Fields::new(&body[..cut]).collect();
            assert_eq!(read, Err(Malformed), "cut at {cut}");
        }
        // A group (wire type 3) and an eleven-byte varint.
        assert!(Fields::new(&[0x0b]).next().unwrap().is_err());
        let eleven = [
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert!(Fields::new(&eleven).next().unwrap().is_err());
        // Field number 0.
        assert!(Fields::new(&[0x00, 0x01]).next().unwrap().is_err());
    }
}
