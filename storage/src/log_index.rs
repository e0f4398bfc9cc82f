//! The full-text index of a set of log rows (one Parquet split, or one
//! memtable batch): Tantivy over `body`, `service`, `severity_text`,
//! `severity_number`, `trace_id`, `time` (a column) and `attributes`,
//! storing nothing but each document's row number, so a search yields the rows to read from
//! Parquet and never a second copy of the data.
//!
//! `body` is indexed by word without positions (they were the largest part
//! of the index): a phrase finds the rows holding all its words, and each
//! is checked against its body ([`crate::log_bodies`]). Words holding a
//! digit are not in `body`'s postings but in a second, small index whose
//! documents are blocks of [`DIGIT_BLOCK_ROWS`] consecutive rows, by their
//! first four characters ([`loupe_search::indexed_word`]); a search for
//! one checks the rows of its blocks the same way
//! ([`loupe_search::RowBlocks`]). `trace_id` keeps each id's first eight
//! digits, and a search for an id checks the rows under them against the
//! `trace_id` column the same way.
//!
//! On disk an index is one "bundle" file beside its Parquet file, written
//! and deleted with it through the object store; the blocks' index is in
//! the same bundle, its files' names under [`BLOCKS_DIR`]. Bundles written
//! before it existed (digit words in `body`, shortened) are still read.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, AsArray, MapArray, RecordBatch, StringArray};
use arrow::datatypes::{Int32Type, TimestampNanosecondType};
use loupe_search::{
    Ast, DIGIT_WORDS_TOKENIZER, ID_WORDS_TOKENIZER, RowBlocks, SHORT_KEYS_TOKENIZER,
    WORDS_NO_DIGITS_TOKENIZER,
};
use tantivy::collector::Count;
use tantivy::directory::RamDirectory;
use tantivy::query::{EnableScoring, Query, RegexQuery, TermQuery};
use tantivy::schema::{
    DateOptions, DateTimePrecision, FAST, Field, IndexRecordOption, JsonObjectOptions,
    NumericOptions, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{LowerCaser, RawTokenizer, TextAnalyzer};
use tantivy::{DateTime, Directory, Index, IndexReader, TantivyDocument, Term};

use crate::error::{Result, StorageError};
use crate::indexed_attributes::Attributes;
use crate::log_bodies::Bodies;
use crate::log_bundle;

const RAW_LOWER: &str = "raw_lower";
const WRITER_MEMORY: usize = 64 << 20;

/// Rows per block of the index of words with a digit. On the 450 k-line
/// real corpus those words' postings per row took 6.2 MB (modelled); by
/// blocks of 32 rows 1.78 MB, of 64 rows 1.42 MB (measured). A search for
/// such a word reads the pages of its blocks' rows, about the pages it
/// read for the rows themselves (a page holds thousands of rows), and
/// rejects most of those rows by a substring test.
pub const DIGIT_BLOCK_ROWS: u32 = 128;

/// Where a bundle keeps the files of the blocks' index.
const BLOCKS_DIR: &str = "blocks/";

/// Field handles of the log index schema.
#[derive(Clone, Copy)]
struct Fields {
    body: Field,
    service: Field,
    severity_text: Field,
    severity_number: Field,
    trace_id: Field,
    time: Field,
    attributes: Field,
    row: Field,
}

/// The index answers which rows match and nothing else: searches never
/// score, so no field keeps norms, and no document is stored (the row
/// number is a fast field; the row itself is in Parquet).
fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let words = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(WORDS_NO_DIGITS_TOKENIZER)
            .set_fieldnorms(false)
            .set_index_option(IndexRecordOption::Basic),
    );
    let keyword = |tokenizer| {
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(tokenizer)
                .set_fieldnorms(false)
                .set_index_option(IndexRecordOption::Basic),
        )
    };
    let json = JsonObjectOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("default")
                .set_fieldnorms(false)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
        .set_expand_dots_enabled()
        // Range queries on JSON values need a columnar copy of them.
        .set_fast("raw");
    let fields = Fields {
        body: b.add_text_field("body", words),
        service: b.add_text_field("service", keyword(RAW_LOWER)),
        severity_text: b.add_text_field("severity_text", keyword(RAW_LOWER)),
        severity_number: b
            .add_i64_field("severity_number", NumericOptions::default().set_indexed()),
        // Nearly one value per two lines: kept by prefix, and the rows
        // under a prefix checked against the column (`short_keys`).
        trace_id: b.add_text_field("trace_id", keyword(SHORT_KEYS_TOKENIZER)),
        // Columnar only: newest-first and histograms read it without
        // Parquet, and time ranges scan it (a term per distinct second
        // was 2 % of the index, and ranges were only to the second).
        time: b.add_date_field(
            "time",
            DateOptions::default()
                .set_fast()
                .set_precision(DateTimePrecision::Nanoseconds),
        ),
        attributes: b.add_json_field("attributes", json),
        row: b.add_u64_field("row", FAST),
    };
    (b.build(), fields)
}

/// The blocks' index: one document per [`DIGIT_BLOCK_ROWS`] rows, holding
/// the words with a digit of those rows' bodies.
fn blocks_schema() -> (Schema, Field) {
    let mut b = Schema::builder();
    let words = b.add_text_field(
        "words",
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(DIGIT_WORDS_TOKENIZER)
                .set_fieldnorms(false)
                .set_index_option(IndexRecordOption::Basic),
        ),
    );
    (b.build(), words)
}

/// Registers every tokenizer a log index may name, including those of
/// bundles written by earlier versions.
fn register_in(tokenizers: &tantivy::tokenizer::TokenizerManager) {
    tokenizers.register(RAW_LOWER, raw_lower());
    tokenizers.register(ID_WORDS_TOKENIZER, loupe_search::words_analyzer());
    tokenizers.register(
        WORDS_NO_DIGITS_TOKENIZER,
        loupe_search::words_without_digits_analyzer(),
    );
    tokenizers.register(DIGIT_WORDS_TOKENIZER, loupe_search::digit_words_analyzer());
    tokenizers.register(SHORT_KEYS_TOKENIZER, loupe_search::short_keys_analyzer());
}

fn register_tokenizers(index: &Index) {
    register_in(index.tokenizers());
}

fn raw_lower() -> TextAnalyzer {
    TextAnalyzer::builder(RawTokenizer::default())
        .filter(LowerCaser)
        .build()
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a dyn Array> {
    batch
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| StorageError::Internal(format!("log batch has no {name} column")))
}

fn strings<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    column(batch, name)?
        .as_string_opt::<i32>()
        .ok_or_else(|| StorageError::Internal(format!("{name} is not text")))
}

/// Indexes the rows of a logs batch through `writer`, numbering them from
/// `first_row`.
fn index_batch(
    add: &mut dyn FnMut(TantivyDocument) -> tantivy::Result<()>,
    fields: Fields,
    batch: &RecordBatch,
    first_row: u64,
) -> Result<()> {
    let body = strings(batch, "body")?;
    let service = strings(batch, "service")?;
    let severity_text = strings(batch, "severity_text")?;
    let trace_id = strings(batch, "trace_id")?;
    let severity_number = column(batch, "severity_number")?
        .as_primitive_opt::<Int32Type>()
        .ok_or_else(|| StorageError::Internal("severity_number is not Int32".into()))?;
    let time = column(batch, "time")?
        .as_primitive_opt::<TimestampNanosecondType>()
        .ok_or_else(|| StorageError::Internal("time is not a timestamp".into()))?;
    let attributes = column(batch, "attributes")?
        .as_any()
        .downcast_ref::<MapArray>()
        .ok_or_else(|| StorageError::Internal("attributes is not a map".into()))?;
    let offsets = attributes.value_offsets();
    let not_text = || StorageError::Internal("attributes are not text".into());
    let keys = attributes
        .keys()
        .as_string_opt::<i32>()
        .ok_or_else(not_text)?;
    let values = attributes
        .values()
        .as_string_opt::<i32>()
        .ok_or_else(not_text)?;
    for row in 0..batch.num_rows() {
        let mut doc = TantivyDocument::default();
        doc.add_u64(fields.row, first_row + row as u64);
        if body.is_valid(row) {
            doc.add_text(fields.body, body.value(row));
        }
        doc.add_text(fields.service, service.value(row));
        doc.add_text(fields.severity_text, severity_text.value(row));
        doc.add_i64(fields.severity_number, severity_number.value(row) as i64);
        if trace_id.is_valid(row) {
            doc.add_text(fields.trace_id, trace_id.value(row));
        }
        doc.add_date(fields.time, DateTime::from_timestamp_nanos(time.value(row)));
        let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        if start < end {
            let object = Attributes::Object {
                keys,
                values,
                start,
                end,
            };
            doc.add_field_value(fields.attributes, object);
        }
        add(doc)?;
    }
    Ok(())
}

/// Builds the index of a file's rows batch by batch, as a flush or a merge
/// writes them, so the rows never have to be in memory at once. The index
/// is one segment built on the calling thread: tantivy's `IndexWriter`
/// starts six threads per index, and short-lived threads' allocator heaps
/// fragment the process's memory. What the segment holds grows with the
/// rows; a merge bounds it by closing its file ([`LogIndexBuilder::memory`]).
pub struct LogIndexBuilder {
    fields: Fields,
    writer: Box<tantivy::SingleSegmentIndexWriter<TantivyDocument>>,
    /// The blocks' index ([`DIGIT_BLOCK_ROWS`]), a document per block.
    blocks: Box<tantivy::SingleSegmentIndexWriter<TantivyDocument>>,
    blocks_field: Field,
    /// The bodies of the rows of the block being filled, a line each.
    block_text: String,
    /// What the writers hold before their first row (tables and buffers of
    /// fixed size, about 10 MB each).
    empty: usize,
    rows: u64,
}

impl LogIndexBuilder {
    /// A builder of one segment on the calling thread; `text_bytes` (the
    /// rows' body bytes, when known) sizes its term table.
    pub fn in_one_segment(text_bytes: usize) -> Result<Self> {
        let (schema, fields) = schema();
        let memory = text_bytes.saturating_mul(4).clamp(1 << 20, WRITER_MEMORY);
        let writer = single_segment_writer(schema, memory)?;
        let (blocks_schema, blocks_field) = blocks_schema();
        // Words with a digit are a fraction of the text, and deduplicated
        // per block.
        let blocks = single_segment_writer(blocks_schema, (memory / 4).max(1 << 20))?;
        Ok(LogIndexBuilder {
            fields,
            empty: writer.mem_usage() + blocks.mem_usage(),
            writer: Box::new(writer),
            blocks: Box::new(blocks),
            blocks_field,
            block_text: String::new(),
            rows: 0,
        })
    }

    /// Indexes the next rows of the file.
    pub fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        let writer = &mut self.writer;
        index_batch(
            &mut |doc| writer.add_document(doc),
            self.fields,
            batch,
            self.rows,
        )?;
        let body = strings(batch, "body")?;
        for row in 0..batch.num_rows() {
            if body.is_valid(row) {
                self.block_text.push_str(body.value(row));
                self.block_text.push('\n');
            }
            self.rows += 1;
            if self.rows.is_multiple_of(u64::from(DIGIT_BLOCK_ROWS)) {
                self.close_block()?;
            }
        }
        Ok(())
    }

    /// Adds the block being filled to the blocks' index: its document
    /// number is the block's number, as every block gets one.
    fn close_block(&mut self) -> Result<()> {
        let mut doc = TantivyDocument::default();
        if !self.block_text.is_empty() {
            doc.add_text(self.blocks_field, &self.block_text);
        }
        self.blocks.add_document(doc)?;
        self.block_text.clear();
        Ok(())
    }

    /// Bytes the index takes by the time it is finished: what the writer
    /// holds (its term table, postings and columns), and the segment it
    /// writes at the end while it still holds that — no larger than what
    /// its rows added to the writer (written postings are compressed) —
    /// which [`LogIndex::to_bundle`] then copies once.
    pub fn memory(&self) -> usize {
        let held = self.writer.mem_usage() + self.blocks.mem_usage() + self.block_text.capacity();
        held + held.saturating_sub(self.empty)
    }

    /// The finished index; its phrase searches read bodies from `bodies`.
    pub(crate) fn finish(mut self, bodies: Bodies) -> Result<LogIndex> {
        if !self.rows.is_multiple_of(u64::from(DIGIT_BLOCK_ROWS)) {
            self.close_block()?;
        }
        let index = finalize(*self.writer)?;
        let blocks = BlockIndex::new(finalize(*self.blocks)?, self.blocks_field)?;
        LogIndex::from_index(index, self.fields, Some(Arc::new(blocks)), bodies)
    }
}

/// The blocks' index of a log index ([`DIGIT_BLOCK_ROWS`]).
struct BlockIndex {
    index: Index,
    reader: IndexReader,
    words: Field,
}

impl std::fmt::Debug for BlockIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockIndex").finish_non_exhaustive()
    }
}

impl BlockIndex {
    fn new(index: Index, words: Field) -> Result<BlockIndex> {
        Ok(BlockIndex {
            reader: index.reader()?,
            index,
            words,
        })
    }

    /// The blocks' index read from a bundle's files (their names without
    /// [`BLOCKS_DIR`]).
    fn open(files: &[(PathBuf, &[u8])]) -> Result<BlockIndex> {
        let index = Index::open(ram_directory(files)?)?;
        register_tokenizers(&index);
        let words = index.schema().get_field("words")?;
        BlockIndex::new(index, words)
    }
}

impl RowBlocks for BlockIndex {
    fn rows_per_block(&self) -> u32 {
        DIGIT_BLOCK_ROWS
    }

    fn blocks(&self, term: &str, prefix: bool) -> tantivy::Result<Vec<u32>> {
        let searcher = self.reader.searcher();
        let query: Box<dyn Query> = if prefix {
            Box::new(RegexQuery::from_pattern(
                &loupe_search::prefix_regex(term),
                self.words,
            )?)
        } else {
            Box::new(TermQuery::new(
                Term::from_field_text(self.words, term),
                IndexRecordOption::Basic,
            ))
        };
        let weight = query.weight(EnableScoring::disabled_from_searcher(&searcher))?;
        let mut blocks = Vec::new();
        for segment in searched_segments(&searcher) {
            weight.for_each_no_score(segment, &mut |docs| blocks.extend_from_slice(docs))?;
        }
        blocks.sort_unstable();
        Ok(blocks)
    }
}

/// A directory holding `files`.
fn ram_directory(files: &[(PathBuf, &[u8])]) -> Result<RamDirectory> {
    let directory = RamDirectory::create();
    for (path, data) in files {
        directory.atomic_write(path, data).map_err(|e| {
            StorageError::Internal(format!("loading index file {}: {e}", path.display()))
        })?;
    }
    Ok(directory)
}

/// A writer of one in-memory segment that starts no thread.
fn single_segment_writer(
    schema: Schema,
    memory: usize,
) -> Result<tantivy::SingleSegmentIndexWriter<TantivyDocument>> {
    let tokenizers = tantivy::tokenizer::TokenizerManager::default();
    register_in(&tokenizers);
    Ok(Index::builder()
        .schema(schema)
        .settings(settings())
        .tokenizers(tokenizers)
        .single_segment_index_writer(RamDirectory::create(), memory)?)
}

fn finalize(writer: tantivy::SingleSegmentIndexWriter<TantivyDocument>) -> Result<Index> {
    let index = writer.finalize()?;
    register_tokenizers(&index);
    Ok(index)
}

/// Nothing is stored in the document store (rows are in Parquet), so it
/// gets no compression thread of its own per segment.
fn settings() -> tantivy::IndexSettings {
    tantivy::IndexSettings {
        docstore_compress_dedicated_thread: false,
        ..Default::default()
    }
}

/// The document store of no document, which a bundle holds in place of
/// the index's own: nothing is stored (rows are in Parquet), yet tantivy
/// writes an entry and an offset per document, which lz4 barely shrinks
/// (4 bytes a row, a tenth of the index on real lines). A searcher only
/// opens a store, and reads no document from it.
fn empty_store() -> Result<Vec<u8>> {
    static EMPTY_STORE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    if let Some(store) = EMPTY_STORE.get() {
        return Ok(store.clone());
    }
    // An index of no rows has it, with the footer tantivy checks.
    let index = finalize(*LogIndexBuilder::in_one_segment(0)?.writer)?;
    let directory = index.directory();
    let path = directory
        .list_managed_files()
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "store"))
        .ok_or_else(|| StorageError::Internal("an empty index has no store".into()))?;
    let store = directory
        .atomic_read(&path)
        .map_err(|e| StorageError::Internal(format!("reading an empty store: {e}")))?;
    Ok(EMPTY_STORE.get_or_init(|| store).clone())
}

fn new_index() -> Result<(Index, Fields, Arc<BlockIndex>)> {
    let create = |schema| -> Result<Index> {
        let index = Index::builder()
            .schema(schema)
            .settings(settings())
            .create_in_ram()?;
        register_tokenizers(&index);
        Ok(index)
    };
    let (schema, fields) = schema();
    let (blocks_schema, words) = blocks_schema();
    let blocks = BlockIndex::new(create(blocks_schema)?, words)?;
    Ok((create(schema)?, fields, Arc::new(blocks)))
}

/// The segments a query runs over: those holding at least one row.
/// Tantivy's prefix/regex scorers panic on a segment of no documents (an
/// empty bit set), which an index of an empty batch has.
fn searched_segments(
    searcher: &tantivy::Searcher,
) -> impl Iterator<Item = &tantivy::SegmentReader> {
    searcher
        .segment_readers()
        .iter()
        .filter(|s| s.max_doc() > 0)
}

/// A searchable index of some log rows.
pub struct LogIndex {
    index: Index,
    reader: IndexReader,
    fields: Fields,
    /// Absent from bundles written before words with a digit were kept
    /// by blocks.
    blocks: Option<Arc<BlockIndex>>,
    bodies: Arc<Bodies>,
}

impl LogIndex {
    /// Indexes `batch` in memory (used for memtable batches), as one
    /// segment written on the calling thread. [`LogIndexBuilder`]'s
    /// `IndexWriter` starts six threads per index; a memtable holds
    /// hundreds of batches under load, and the threads' short-lived
    /// allocator heaps left the process's memory fragmented far beyond
    /// what it used (and each start cost more than indexing a batch).
    pub fn build(batch: &RecordBatch) -> Result<LogIndex> {
        let body = strings(batch, "body")?;
        let mut builder = LogIndexBuilder::in_one_segment(body.values().len())?;
        builder.add(batch)?;
        builder.finish(Bodies::Batch(batch.clone()))
    }

    /// An index of no rows: compiling and running a query against it
    /// checks the query alone (the fuzz target uses it).
    pub fn empty() -> Result<LogIndex> {
        LogIndexBuilder::in_one_segment(0)?.finish(Bodies::Unavailable)
    }

    fn from_index(
        index: Index,
        fields: Fields,
        blocks: Option<Arc<BlockIndex>>,
        bodies: Bodies,
    ) -> Result<LogIndex> {
        let reader = index.reader()?;
        Ok(LogIndex {
            index,
            reader,
            fields,
            blocks,
            bodies: Arc::new(bodies),
        })
    }

    /// Opens an index from its bundle file's bytes; `parquet` is the local
    /// path of the split file it indexes, which phrase searches read.
    pub fn open(bundle: &[u8], parquet: Option<PathBuf>) -> Result<LogIndex> {
        LogIndex::open_with(bundle, parquet.map_or(Bodies::Unavailable, Bodies::File))
    }

    /// Opens an index whose phrase checks read `bodies`.
    pub(crate) fn open_with(bundle: &[u8], bodies: Bodies) -> Result<LogIndex> {
        let (block_files, files): (Vec<_>, Vec<_>) = log_bundle::read_bundle(bundle)?
            .into_iter()
            .partition(|(path, _)| path.starts_with(BLOCKS_DIR));
        let index = Index::open(ram_directory(&files)?)?;
        register_tokenizers(&index);
        let (_, fields) = schema();
        let blocks = if block_files.is_empty() {
            None
        } else {
            let block_files: Vec<(PathBuf, &[u8])> = block_files
                .into_iter()
                .map(|(path, data)| {
                    let inner = path.strip_prefix(BLOCKS_DIR).unwrap_or(&path).to_path_buf();
                    (inner, data)
                })
                .collect();
            Some(Arc::new(BlockIndex::open(&block_files)?))
        };
        LogIndex::from_index(index, fields, blocks, bodies)
    }

    /// The bundle file: every file of the index, and of its blocks' index
    /// under [`BLOCKS_DIR`], concatenated.
    pub fn to_bundle(&self) -> Result<Vec<u8>> {
        let mut out = log_bundle::new_bundle();
        append_files(&mut out, &self.index, "")?;
        if let Some(blocks) = &self.blocks {
            append_files(&mut out, &blocks.index, BLOCKS_DIR)?;
        }
        Ok(out)
    }

    /// Rows matching `query`, ascending; terms without a field search
    /// `body`.
    pub fn matching_rows(&self, query: &Ast) -> Result<Vec<u32>> {
        let query = self.parse(query)?;
        let searcher = self.reader.searcher();
        let weight = query.weight(EnableScoring::disabled_from_searcher(&searcher))?;
        let mut rows = Vec::new();
        for segment in searched_segments(&searcher) {
            let row_column = segment.fast_fields().u64("row")?;
            weight.for_each_no_score(segment, &mut |docs| {
                rows.extend(
                    docs.iter()
                        .filter_map(|d| row_column.first(*d))
                        .map(|r| r as u32),
                );
            })?;
        }
        rows.sort_unstable();
        Ok(rows)
    }

    /// Calls `each(time_ns, row)` for every row matching `query` whose time
    /// is within `[start, end]`.
    pub fn for_each_match(
        &self,
        query: &Ast,
        start: i64,
        end: i64,
        mut each: impl FnMut(i64, u32),
    ) -> Result<()> {
        let query = self.parse(query)?;
        let searcher = self.reader.searcher();
        let weight = query.weight(EnableScoring::disabled_from_searcher(&searcher))?;
        for segment in searched_segments(&searcher) {
            let rows = segment.fast_fields().u64("row")?;
            let times = Times::of(segment)?;
            weight.for_each_no_score(segment, &mut |docs| {
                for doc in docs {
                    if let (Some(row), Some(t)) = (rows.first(*doc), times.first(*doc))
                        && t >= start
                        && t <= end
                    {
                        each(t, row as u32);
                    }
                }
            })?;
        }
        Ok(())
    }

    fn parse(&self, query: &Ast) -> Result<Box<dyn tantivy::query::Query>> {
        parse(
            &self.index,
            self.fields,
            query,
            self.bodies.clone(),
            self.blocks.clone(),
        )
    }

    /// Bytes per field and per part of the index (term dictionary,
    /// postings, positions, fast fields, field norms, doc store), the
    /// blocks' index's under `blocks:`: what a storage-size investigation
    /// needs to know.
    pub fn space_report(&self) -> Result<Vec<(String, u64)>> {
        let mut out: BTreeMap<String, u64> = BTreeMap::new();
        space_usage(&self.reader, "", &mut out)?;
        if let Some(blocks) = &self.blocks {
            space_usage(&blocks.reader, "blocks:", &mut out)?;
        }
        Ok(out.into_iter().collect())
    }

    /// Number of indexed rows.
    pub fn num_docs(&self) -> Result<usize> {
        let searcher = self.reader.searcher();
        Ok(searcher.search(&tantivy::query::AllQuery, &Count)?)
    }
}

/// Writes the files of `index` into a bundle, names under `dir`; the
/// document store as the empty one ([`empty_store`]).
fn append_files(out: &mut Vec<u8>, index: &Index, dir: &str) -> Result<()> {
    let directory = index.directory();
    let mut files: Vec<PathBuf> = directory.list_managed_files().into_iter().collect();
    files.push(PathBuf::from("meta.json"));
    files.sort();
    files.dedup();
    for path in files {
        let data = match directory.atomic_read(&path) {
            Ok(_) if path.extension().is_some_and(|e| e == "store") => empty_store()?,
            Ok(data) => data,
            Err(tantivy::directory::error::OpenReadError::FileDoesNotExist(_)) => continue,
            Err(e) => return Err(StorageError::Internal(format!("reading index file: {e}"))),
        };
        log_bundle::push_file(out, &format!("{dir}{}", path.to_string_lossy()), &data);
    }
    Ok(())
}

/// Adds the bytes per part and field of `reader`'s index to `out`, keys
/// prefixed by `prefix`.
fn space_usage(reader: &IndexReader, prefix: &str, out: &mut BTreeMap<String, u64>) -> Result<()> {
    let usage = reader
        .searcher()
        .space_usage()
        .map_err(|e| StorageError::Internal(format!("index space usage: {e}")))?;
    for segment in usage.segments() {
        for (part, per_field) in [
            ("termdict", segment.termdict()),
            ("postings", segment.postings()),
            ("positions", segment.positions()),
            ("fast", segment.fast_fields()),
            ("fieldnorms", segment.fieldnorms()),
        ] {
            for field in per_field.fields() {
                *out.entry(format!("{prefix}{part}/{}", field.field_name()))
                    .or_default() += field.total().get_bytes();
            }
        }
        *out.entry(format!("{prefix}store")).or_default() += segment.store().total().get_bytes();
    }
    Ok(())
}

/// The rows' times (ns) in an index's columns.
enum Times {
    Time(tantivy::columnar::Column<DateTime>),
    /// Indexes written before `time` was columnar kept the ns in `ts`.
    Ts(tantivy::columnar::Column<i64>),
}

impl Times {
    fn of(segment: &tantivy::SegmentReader) -> tantivy::Result<Times> {
        if segment.schema().get_field("ts").is_ok() {
            return Ok(Times::Ts(segment.fast_fields().i64("ts")?));
        }
        Ok(Times::Time(segment.fast_fields().date("time")?))
    }

    fn first(&self, doc: tantivy::DocId) -> Option<i64> {
        match self {
            Times::Time(c) => c.first(doc).map(|t| t.into_timestamp_nanos()),
            Times::Ts(c) => c.first(doc),
        }
    }
}

fn parse(
    index: &Index,
    fields: Fields,
    query: &Ast,
    bodies: Arc<Bodies>,
    blocks: Option<Arc<BlockIndex>>,
) -> Result<Box<dyn tantivy::query::Query>> {
    let blocks = blocks.map(|b| b as Arc<dyn RowBlocks>);
    loupe_search::to_tantivy(query, index, fields.body, Some(bodies), blocks)
        .map_err(|e| StorageError::InvalidSearch(e.to_string()))
}

/// Parses search text (the syntax of the README's "Searching logs") and
/// checks it against the log index's fields, so a bad query is the
/// caller's error before any index is opened.
pub fn parse_query(query: &str) -> Result<Ast> {
    let ast = loupe_search::parse(query).map_err(|e| StorageError::InvalidSearch(e.to_string()))?;
    let (index, fields, blocks) = new_index()?;
    parse(
        &index,
        fields,
        &ast,
        Arc::new(Bodies::Unavailable),
        Some(blocks),
    )?;
    Ok(ast)
}

/// Checks a query's syntax without running it.
pub fn validate_query(query: &str) -> Result<()> {
    parse_query(query).map(|_| ())
}

#[cfg(test)]
#[path = "log_index_tests.rs"]
mod tests;
