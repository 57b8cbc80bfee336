// Placeholder for dependencies of @push.rocks/smartmongo that the CongoDB server never
// loads. Exports nothing useful on purpose.
'use strict';
module.exports = {};
