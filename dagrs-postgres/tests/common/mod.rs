//! The test databases of `dagrs_postgres::testing`, under the name these tests use.

pub use dagrs_postgres::testing::TestDatabase as TestDb;
