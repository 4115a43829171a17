//! Row types for bulk writes, and the binary `COPY` encoder they feed.

use std::error::Error as StdError;
use std::iter::Peekable;

use bytes::{BufMut, BytesMut};
use futures_util::SinkExt;
use tokio_postgres::types::{IsNull, Kind, ToSql, Type};
use tokio_postgres::Transaction;

use crate::error::{query_error, Error, Result};

/// Header of the binary COPY format: signature, flags, header extension length.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// Encoded bytes gathered before they are handed to the connection.
const SEND_AT: usize = 256 * 1024;

/// A row type that [`Upsert`](crate::Upsert) can write with binary `COPY`.
///
/// `COLUMNS` names the target columns; `write_row` pushes one value per
/// column, in that order, straight into the COPY buffer — no boxing, no
/// per-row allocation. Any [`ToSql`] type works, `Option<T>` writes NULL, and
/// each value is checked against the column's actual type (read from the
/// table), so a mismatch is an [`Error::Encode`] naming the column and row.
///
/// ```
/// use chrono::{DateTime, Utc};
/// use dagrs_postgres::{CopyRow, RowWriter};
///
/// struct Reading {
///     ts: DateTime<Utc>,
///     tag_name: String,
///     value: f64,
///     qc: Option<i32>,
/// }
///
/// impl CopyRow for Reading {
///     const COLUMNS: &'static [&'static str] = &["ts", "tag_name", "value", "qc"];
///     fn write_row(&self, row: &mut RowWriter<'_>) {
///         row.push(self.ts).push(&self.tag_name).push(self.value).push(self.qc);
///     }
/// }
/// ```
pub trait CopyRow {
    /// The target table's columns this row fills, in the order `write_row` pushes them.
    const COLUMNS: &'static [&'static str];

    /// Pushes this row's values, one per name in [`COLUMNS`](Self::COLUMNS), in order.
    fn write_row(&self, row: &mut RowWriter<'_>);
}

impl<T: CopyRow + ?Sized> CopyRow for &T {
    const COLUMNS: &'static [&'static str] = T::COLUMNS;

    fn write_row(&self, row: &mut RowWriter<'_>) {
        (**self).write_row(row);
    }
}

/// Encodes one row's values into the COPY buffer; see [`CopyRow`].
pub struct RowWriter<'a> {
    buf: &'a mut BytesMut,
    types: &'a [Type],
    pushed: usize,
    error: Option<(usize, Box<dyn StdError + Send + Sync>)>,
}

impl RowWriter<'_> {
    /// Encodes the value of the next column: any [`ToSql`] value or
    /// reference (`&self.ts`, `"text"`, `Some(1)`, `None::<i32>` for NULL).
    ///
    /// Errors (a type that does not fit the column, too many values) are kept
    /// and reported once the row is done, so calls can be chained.
    pub fn push<T: ToSql>(&mut self, value: T) -> &mut Self {
        let column = self.pushed;
        self.pushed += 1;
        if self.error.is_some() {
            return self;
        }
        let Some(ty) = self.types.get(column) else {
            // Too many values: reported as Error::ColumnCount after the row.
            return self;
        };
        let length_at = self.buf.len();
        self.buf.put_i32(0);
        match value.to_sql_checked(ty, self.buf) {
            Ok(IsNull::Yes) => {
                self.buf.truncate(length_at);
                self.buf.put_i32(-1);
            }
            Ok(IsNull::No) => {
                let written = self.buf.len() - length_at - 4;
                match i32::try_from(written) {
                    Ok(length) => {
                        self.buf[length_at..length_at + 4].copy_from_slice(&length.to_be_bytes())
                    }
                    Err(_) => {
                        self.error = Some((column, "the value is larger than 2 GiB".into()));
                    }
                }
            }
            Err(err) => self.error = Some((column, err)),
        }
        self
    }
}

/// The column types a binary COPY must encode: domains are sent as their base type.
pub(crate) fn wire_type(ty: &Type) -> Type {
    match ty.kind() {
        Kind::Domain(base) => wire_type(base),
        _ => ty.clone(),
    }
}

/// One binary `COPY … FROM STDIN` run.
pub(crate) struct CopyIn<'a> {
    /// The `COPY … FROM STDIN (FORMAT binary)` statement.
    pub statement: &'a str,
    /// Wire types of the columns, in `COLUMNS` order.
    pub types: &'a [Type],
    /// The target, for messages.
    pub table: &'a str,
    /// Most rows to take from the input in this run.
    pub limit: u64,
    /// Input position of the first row, for messages.
    pub first_row: u64,
}

/// What a COPY did.
pub(crate) struct Copied {
    /// Rows taken from the input and sent.
    pub sent: u64,
    /// Rows the server stored: fewer than `sent` when the statement's `WHERE` skipped some.
    pub stored: u64,
}

/// What went wrong in a COPY: the row encoding (already a crate error) or the server.
pub(crate) enum CopyFailure {
    Encode(Error),
    Server(tokio_postgres::Error),
}

impl CopyFailure {
    /// The crate's error: an encoding error as it is, the server's as a query error while
    /// doing `action`.
    pub(crate) fn into_error(self, action: impl FnOnce() -> String) -> Error {
        match self {
            CopyFailure::Encode(err) => err,
            CopyFailure::Server(err) => query_error(action())(err),
        }
    }
}

impl CopyIn<'_> {
    /// Streams up to `limit` rows from `rows`; returns how many were sent and stored.
    ///
    /// When it fails, the COPY is aborted (the sink is dropped unfinished) and
    /// the transaction must be rolled back.
    pub(crate) async fn run<R, I>(
        &self,
        tx: &Transaction<'_>,
        rows: &mut Peekable<I>,
    ) -> Result<Copied, CopyFailure>
    where
        R: CopyRow,
        I: Iterator<Item = R>,
    {
        let sink = tx
            .copy_in::<_, bytes::Bytes>(self.statement)
            .await
            .map_err(CopyFailure::Server)?;
        let mut sink = std::pin::pin!(sink);
        let mut buf = BytesMut::with_capacity(SEND_AT * 2);
        buf.put_slice(HEADER);
        let columns = R::COLUMNS.len();
        let field_count = i16::try_from(columns).map_err(|_| {
            CopyFailure::Encode(Error::InvalidSetting {
                setting: "CopyRow::COLUMNS",
                value: columns.to_string(),
                reason: "a row can have at most 32767 columns",
            })
        })?;
        let mut sent = 0u64;
        while sent < self.limit {
            let Some(row) = rows.next() else { break };
            let row_number = self.first_row + sent;
            buf.put_i16(field_count);
            let mut writer = RowWriter {
                buf: &mut buf,
                types: self.types,
                pushed: 0,
                error: None,
            };
            row.write_row(&mut writer);
            let (pushed, error) = (writer.pushed, writer.error);
            if let Some((column, source)) = error {
                return Err(CopyFailure::Encode(Error::Encode {
                    table: self.table.to_owned(),
                    column: R::COLUMNS[column].to_owned(),
                    row: row_number,
                    source,
                }));
            }
            if pushed != columns {
                return Err(CopyFailure::Encode(Error::ColumnCount {
                    table: self.table.to_owned(),
                    row: row_number,
                    written: pushed,
                    declared: columns,
                }));
            }
            sent += 1;
            if buf.len() >= SEND_AT {
                sink.send(buf.split().freeze())
                    .await
                    .map_err(CopyFailure::Server)?;
            }
        }
        buf.put_i16(-1);
        sink.send(buf.split().freeze())
            .await
            .map_err(CopyFailure::Server)?;
        let stored = sink.as_mut().finish().await.map_err(CopyFailure::Server)?;
        Ok(Copied { sent, stored })
    }
}
