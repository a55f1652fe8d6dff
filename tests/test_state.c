/* placeholder: being written */
#include <criterion/criterion.h>
Test(placeholder_state, pending) { cr_assert_fail("not written yet"); }
