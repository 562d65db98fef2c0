-- Intake keeps no customer contact (the email and phone travel on sealed for notify alone): the
-- accepted events tickets kept from before lose the plain `email` and `phone` of their customer.
-- Re-sent duplicates get this event back; notify has long had the original.
UPDATE intake.tickets
SET outcome_value = convert_to(
        (convert_from(outcome_value, 'UTF8')::jsonb #- '{data,customer,email}' #- '{data,customer,phone}')::text,
        'UTF8')
WHERE outcome = 'accepted'
  AND convert_from(outcome_value, 'UTF8')::jsonb #> '{data,customer}' ?| array['email', 'phone'];
